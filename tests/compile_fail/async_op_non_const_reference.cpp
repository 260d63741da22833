// expect: xcs::async_op: the function must be callable as const with its inputs as const T&
#include <string>

#include "xcs/xcs.hpp"

int main() {
  auto fetch = xcs::async_op(
      "fetch", [](std::string& url, xcs::completion<std::string> done) { done(url + "!"); });
  auto f = xcs::jit([&](auto u) { return fetch(u) + "?"; });
  return static_cast<int>(f(std::string("a")).size());
}
