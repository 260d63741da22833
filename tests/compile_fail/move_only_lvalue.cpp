// expect: xcs::jit: an argument is an lvalue the callable takes by value but cannot copy
#include <memory>
#include <string>

#include "xcs/xcs.hpp"

int main() {
  auto f = xcs::jit([](auto p) { return std::to_string(*p); });
  auto p = std::make_unique<int>(1);
  auto s = f(p);
  return static_cast<int>(s.size());
}
