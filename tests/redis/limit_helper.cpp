// SPDX-License-Identifier: MIT
// One process of the multi-process tests: from a common start time, `threads` threads call a
// jitted function of rate-limited ops for `seconds`, with a limiter in Redis or (--local) one of
// this process's own. Each op start in the window writes a line "s <ms since start>" to stdout
// at once (so the starts of a process killed mid-run are counted too); at the end, "done <n>".
//
//   limit_helper URL KEY RATE BURST START_UNIX_MS SECONDS THREADS [--local]
#include <unistd.h>
#include <xcs/redis.hpp>
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono;

std::int64_t unix_ms() {
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 8) {
    std::fprintf(stderr, "usage: %s URL KEY RATE BURST START_UNIX_MS SECONDS THREADS [--local]\n",
                 argv[0]);
    return 2;
  }
  const std::string url = argv[1];
  const std::string key = argv[2];
  const double rate = std::atof(argv[3]);
  const double burst = std::atof(argv[4]);
  const std::int64_t start_ms = std::atoll(argv[5]);
  const std::int64_t end_ms = start_ms + static_cast<std::int64_t>(std::atof(argv[6]) * 1000);
  const int threads = std::atoi(argv[7]);
  const bool local = argc > 8 && std::string(argv[8]) == "--local";

  try {
    xcs::rate_limiter limiter =
        local ? xcs::rate_limiter(rate, burst) : xcs::redis_rate_limiter(url, key, rate, burst);
    std::atomic<long> starts{0};
    auto limited = xcs::op(
        "limited",
        [&](int x) {
          const std::int64_t now = unix_ms();
          if (now >= start_ms && now < end_ms) {
            char line[32];
            const int n = std::snprintf(line, sizeof line, "s %lld\n",
                                        static_cast<long long>(now - start_ms));
            [[maybe_unused]] const auto written = ::write(1, line, static_cast<std::size_t>(n));
            starts.fetch_add(1, std::memory_order_relaxed);
          }
          return x + 1;
        },
        xcs::rate_limit(limiter));
    auto f = xcs::jit([&](auto x) { return limited(x) + limited(x + 1); });

    std::this_thread::sleep_for(milliseconds(std::max<std::int64_t>(0, start_ms - unix_ms())));
    std::atomic<bool> failed{false};
    std::vector<std::thread> callers;
    for (int t = 0; t < threads; ++t) {
      callers.emplace_back([&] {
        try {
          while (unix_ms() < end_ms) {
            if (f(1) != 5) failed = true;
          }
        } catch (const std::exception& e) {
          std::fprintf(stderr, "limit_helper: %s\n", e.what());
          failed = true;
        }
      });
    }
    for (auto& c : callers) c.join();
    std::printf("done %ld\n", starts.load());
    return failed ? 1 : 0;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "limit_helper: %s\n", e.what());
    return 1;
  }
}
