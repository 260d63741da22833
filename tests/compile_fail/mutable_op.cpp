// expect: xcs::op: the op's callable is not callable as const
#include "xcs/xcs.hpp"

int main() {
  auto count = xcs::op("count", [n = 0](int x) mutable { return x + ++n; });
  auto f = xcs::jit([&](auto x) { return count(x); });
  return f(1);
}
