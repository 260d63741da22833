// expect: xcs::op: the op takes an argument by non-const reference
#include <string>

#include "xcs/xcs.hpp"

int main() {
  auto append = xcs::op("append", [](std::string& s) { return s += "!"; });
  auto length = xcs::op("length", [](const std::string& s) { return s.size(); });
  auto f = xcs::jit([&](auto s) { return length(append(s) + "?") + 1; });
  return static_cast<int>(f(std::string("a")));
}
