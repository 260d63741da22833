// expect: xcs::op: the op takes an argument by non-const reference
#include <string>

#include "xcs/xcs.hpp"

// The body takes its argument by const reference, so the plain run of the body fails too (it
// passes a const string): still one error.
int main() {
  auto append = xcs::op("append", [](std::string& s) { return s += "!"; });
  auto f = xcs::jit([&](const auto& s) { return append(s) + "?"; });
  return static_cast<int>(f(std::string("a")).size());
}
