// SPDX-License-Identifier: MIT
// Calls `add(inc(a), inc(a))` through xcs::jit (mode 0), `inc` directly (mode 1), or a staged
// branchy body of 4 trivial ops and one read through xcs::jit (mode 2) N times, for
// bench/callgrind_calls.sh, which counts the instructions of two values of N and divides the
// difference: what one cached call costs, free of start-up and of the machine's load.
#include <cstdio>
#include <cstdlib>
#include <xcs/xcs.hpp>

int main(int argc, char** argv) {
  const int n = argc > 1 ? std::atoi(argv[1]) : 100000;
  const int mode = argc > 2 ? std::atoi(argv[2]) : 0;
  auto inc = xcs::op("inc", [](int x) { return x + 1; });
  auto add = xcs::op("add", [](int a, int b) { return a + b; });
  auto f = xcs::jit([&](auto a) { return add(inc(a), inc(a)); });
  // staged_bench's BM_Jit_StagedBranchyTrivial: the `if` reads a comparison of two op results.
  auto branchy = xcs::jit([&](auto a, auto b) {
    auto x = inc(a);
    auto y = inc(b);
    if (x < y) return add(x, y);
    return add(y, x);
  });
  long sum = 0;
  if (mode == 0) {
    for (int i = 0; i < n; ++i) sum += f(i);
  } else if (mode == 2) {
    for (int i = 0; i < n; ++i) sum += branchy(i, i % 7);
  } else {
    for (int i = 0; i < n; ++i) sum += inc(i);
  }
  std::printf("%ld\n", sum);
}
