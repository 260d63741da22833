// SPDX-License-Identifier: MIT
// Calls `add(inc(a), inc(a))` through xcs::jit (mode 0) or `inc` directly (mode 1) N times, for
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
  long sum = 0;
  if (mode == 0) {
    for (int i = 0; i < n; ++i) sum += f(i);
  } else {
    for (int i = 0; i < n; ++i) sum += inc(i);
  }
  std::printf("%ld\n", sum);
}
