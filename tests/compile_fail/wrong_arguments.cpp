// expect: xcs::jit: the callable cannot be called with these arguments
#include <string>

#include "xcs/xcs.hpp"

int main() {
  auto f = xcs::jit([](int a, int b) { return a + b; });
  return f(std::string("one"));
}
