// expect: xcs::batch_op: xcs::cache is not supported for a batch op
#include "xcs/xcs.hpp"

// A batch sends equal inputs once already; a result cache would sit in front of the batch.
int main() {
  auto store = xcs::memory_cache(100, std::chrono::seconds(0));
  auto twice = xcs::batch_op(
      "twice",
      [](const std::vector<int>& in) {
        std::vector<int> out;
        for (int x : in) out.push_back(2 * x);
        return out;
      },
      xcs::cache(store));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(twice, v); });
  return static_cast<int>(f(std::vector<int>{1, 2}).size()) + twice(2);
}
