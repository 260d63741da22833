// expect: xcs: a plain value passed to an op in a traced body becomes a constant
#include <memory>

#include "xcs/xcs.hpp"

int main() {
  auto add = xcs::op("add", [](int x, const std::unique_ptr<int>& p) { return x + *p; });
  auto f = xcs::jit([&](auto x) { return add(x, std::make_unique<int>(2)) * 2; });
  return f(1) + 1;
}
