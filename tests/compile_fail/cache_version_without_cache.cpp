// expect: xcs::cache_version: applies only beside xcs::cache(store)
#include "xcs/xcs.hpp"

// A version names a cache's keys: without xcs::cache it would silently mean nothing.
int main() {
  auto ask = xcs::op(
      "ask", [](int x) { return x; }, xcs::cache_version("v2"));
  auto f = xcs::jit([&](auto x) { return ask(x) + ask(x + 1); });
  return f(1) + ask(2);
}
