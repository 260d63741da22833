// SPDX-License-Identifier: MIT
// A user's program built against an installed xcs: exits 0 when jit gives f(1, 2) == 6.
#include <xcs/xcs.hpp>

#include <cstdio>

namespace {

auto twice = xcs::op("twice", [](int x) { return 2 * x; });

}  // namespace

int main() {
  auto f = xcs::jit([](auto a, auto b) { return twice(a) + twice(b); });
  if (!(f(1, 2) == 6)) {
    std::fputs("consumer: xcs::jit gave f(1, 2) != 6\n", stderr);
    return 1;
  }
  std::puts("consumer: f(1, 2) == 6");
  return 0;
}
