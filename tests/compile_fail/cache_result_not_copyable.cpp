// expect: xcs::cache: a cached op must return a copy-constructible value
#include <memory>

#include "xcs/xcs.hpp"

// A hit returns a copy of the kept result, so a cached op's result must be copyable.
int main() {
  auto store = xcs::memory_cache(10, std::chrono::seconds(0));
  auto make = xcs::op(
      "make", [](int x) { return std::make_unique<int>(x); }, xcs::cache(store));
  auto f = xcs::jit([&](auto x) { return make(x); });
  return *f(1) + *make(2);
}
