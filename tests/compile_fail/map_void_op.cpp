// expect: xcs::map: f returns void, so there is nothing to collect
#include <string>
#include <vector>

#include "xcs/xcs.hpp"

int main() {
  auto log = xcs::op("log", [](const std::string&) {});
  auto f = xcs::jit([&](const auto& docs) { return xcs::map(log, docs).size(); });
  return static_cast<int>(f(std::vector<std::string>{"a", "b"}));
}
