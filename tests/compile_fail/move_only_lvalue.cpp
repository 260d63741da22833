// expect: xcs::jit: an argument is an lvalue the callable takes by value but cannot copy
#include <memory>

#include "xcs/xcs.hpp"

int main() {
  auto f = xcs::jit([](auto p) { return *p; });
  auto p = std::make_unique<int>(1);
  return f(p);
}
