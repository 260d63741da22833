// expect: xcs::map: f cannot be called with an element of v
#include <string>
#include <vector>

#include "xcs/xcs.hpp"

int main() {
  auto length = xcs::op("length", [](const std::string& s) { return s.size(); });
  auto f = xcs::jit([&](const auto& xs) { return xcs::map(length, xs).size(); });
  return static_cast<int>(f(std::vector<int>{1, 2}));
}
