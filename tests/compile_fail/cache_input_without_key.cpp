// expect: xcs::cache: an input of a cached op has no cache key encoding
#include <string>

#include "xcs/xcs.hpp"

struct config {
  int depth;
};

// A cached op's inputs make its key: a type xcs cannot encode (and without an xcs_cache_key
// of the user's) stops the compilation once, whether the op is traced or called directly.
int main() {
  auto store = xcs::memory_cache(10, std::chrono::seconds(0));
  auto plan = xcs::op(
      "plan", [](const config& c, int x) { return c.depth + x; }, xcs::cache(store));
  auto f = xcs::jit([&](auto c, auto x) { return plan(c, x) + plan(c, x + 1); });
  return f(config{2}, 1) + plan(config{1}, 2);
}
