// expect: xcs::jit: the callable cannot be called with these arguments
#include <string>

#include "xcs/xcs.hpp"

int main() {
  auto f = xcs::jit([](int a, int b) { return a + b; });
  auto r = f(std::string("one"));
  int twice = r * 2;
  return twice + 1;
}
