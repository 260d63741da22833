// expect: xcs::batch_op: the function must be std::vector<Out>(const std::vector<In>&)
#include "xcs/xcs.hpp"

// A generic lambda has no one signature to read In and Out from.
int main() {
  auto twice = xcs::batch_op("twice", [](const auto& in) { return in; });
  auto f = xcs::jit([&](const auto& v) { return xcs::map(twice, v); });
  return static_cast<int>(f(std::vector<int>{1, 2}).size()) + twice(2);
}
