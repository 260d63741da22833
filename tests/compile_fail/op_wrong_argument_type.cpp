// expect: op_takes_arguments
// first error: in this file
#include <string>

#include "xcs/xcs.hpp"

// The op is called with an int where it takes a string: the first error is this file's call.
int main() {
  auto length = xcs::op("length", [](const std::string& s) { return s.size(); });
  auto f = xcs::jit([&](auto x) { return length(x) + 1; });
  return static_cast<int>(f(1));
}
