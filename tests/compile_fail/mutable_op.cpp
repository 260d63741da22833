// expect: xcs::op: the op's callable is not callable as const
#include <string>

#include "xcs/xcs.hpp"

// The result is used afterwards (an operator, a branch, another op), and still the
// static_assert is the only error.
int main() {
  auto count = xcs::op("count", [n = 0](int x) mutable { return x + ++n; });
  auto show = xcs::op("show", [](int x) { return std::to_string(x); });
  auto f = xcs::jit([&](auto x) {
    auto y = count(x) * 2;
    if (y > 2) return show(y);
    return show(count(y));
  });
  return static_cast<int>(f(1).size());
}
