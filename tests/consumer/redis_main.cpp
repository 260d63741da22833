// SPDX-License-Identifier: MIT
// A user's program built against an installed xcs with the component redis: exits 0 when a
// limiter for a Redis that is not there fails an op with an xcs::error naming its URL.
#include <xcs/redis.hpp>
#include <xcs/xcs.hpp>

#include <cstdio>
#include <string>

int main() {
  // Port 1 on loopback: nothing listens there, so connecting is refused at once.
  const std::string url = "redis://127.0.0.1:1";
  auto limiter = xcs::redis_rate_limiter(url, "consumer", 10, 5);
  auto limited = xcs::op(
      "limited", [](int x) { return x; }, xcs::rate_limit(limiter));
  auto f = xcs::jit([&](auto x) { return limited(x); });
  try {
    (void)f(1);
    std::fputs("consumer_redis: no error without a Redis\n", stderr);
    return 1;
  } catch (const xcs::error& e) {
    if (std::string(e.what()).find(url) == std::string::npos) {
      std::fprintf(stderr, "consumer_redis: the error does not name %s: %s\n", url.c_str(),
                   e.what());
      return 1;
    }
  }
  std::puts("consumer_redis: a missing Redis fails the op with its URL");
  return 0;
}
