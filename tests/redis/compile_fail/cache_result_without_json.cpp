// expect: xcs::redis_cache: the result of a cached op must convert to and from JSON
#include <string>

#include "xcs/redis.hpp"
#include "xcs/xcs.hpp"

struct plan {
  int depth;
};

// A result kept in Redis is JSON: a type without to_json / from_json stops the compilation
// once, whether the op is traced or called directly.
int main() {
  auto store = xcs::redis_cache("redis://127.0.0.1:6379", "p:", std::chrono::seconds(0));
  auto make = xcs::op(
      "make", [](int x) { return plan{x}; }, xcs::cache(store));
  auto f = xcs::jit([&](auto x) { return make(x); });
  return f(1).depth + make(2).depth;
}
