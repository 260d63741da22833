// SPDX-License-Identifier: MIT
// One process of the multi-process tests of xcs::redis_cache. Each call of a cached op writes
// a line "c <input>" to stdout at once (so the calls of a process killed mid-call are counted
// too); at the end, "done".
//
//   cache_helper URL PREFIX compute N              keys 0..N-1 of `square`, through a plan
//   cache_helper URL PREFIX flight START_MS THREADS   THREADS threads ask `slow` for one key
//   cache_helper URL PREFIX own                    one call of `stuck` (timeout 1 s) that never
//                                                  returns: the test kills it mid-call
#include <unistd.h>
#include <xcs/redis.hpp>
#include <xcs/xcs.hpp>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace std::chrono;

void note_call(long input) {
  char line[32];
  const int n = std::snprintf(line, sizeof line, "c %ld\n", input);
  [[maybe_unused]] const auto written = ::write(1, line, static_cast<std::size_t>(n));
}

std::int64_t unix_ms() {
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

int compute(const xcs::redis_result_cache& store, int n) {
  auto square = xcs::op(
      "square",
      [](long x) {
        note_call(x);
        return x * x;
      },
      xcs::cache(store));
  auto f = xcs::jit([&](auto x) { return square(x) + square(x + 1000); });
  for (long x = 0; x < n; ++x) {
    if (f(x) != x * x + (x + 1000) * (x + 1000)) return 1;
  }
  return 0;
}

int flight(const xcs::redis_result_cache& store, std::int64_t start_ms, int threads) {
  auto slow = xcs::op(
      "slow",
      [](long x) {
        note_call(x);
        std::this_thread::sleep_for(milliseconds(300));
        return x + 1;
      },
      xcs::cache(store));
  auto f = xcs::jit([&](auto x) { return slow(x) * 2; });
  std::this_thread::sleep_for(milliseconds(std::max<std::int64_t>(0, start_ms - unix_ms())));
  std::vector<std::thread> callers;
  std::atomic<bool> failed{false};
  for (int t = 0; t < threads; ++t) {
    callers.emplace_back([&, t] {
      // Half through plans, half as direct calls: both share one flight.
      const long r = t % 2 ? f(41L) : slow(41L) * 2;
      if (r != 84) failed = true;
    });
  }
  for (auto& c : callers) c.join();
  return failed ? 1 : 0;
}

int own(const xcs::redis_result_cache& store) {
  auto stuck = xcs::op(
      "stuck",
      [](long x) {
        note_call(x);
        std::this_thread::sleep_for(hours(1));
        return x;
      },
      xcs::cache(store), xcs::timeout(seconds(1)));
  return stuck(7L) == 7 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 4) {
    std::fprintf(stderr, "usage: %s URL PREFIX compute N | flight START_MS THREADS | own\n",
                 argv[0]);
    return 2;
  }
  try {
    const auto store = xcs::redis_cache(argv[1], argv[2], hours(1));
    const std::string mode = argv[3];
    int rc = 2;
    if (mode == "compute" && argc > 4) rc = compute(store, std::atoi(argv[4]));
    if (mode == "flight" && argc > 5) rc = flight(store, std::atoll(argv[4]), std::atoi(argv[5]));
    if (mode == "own") rc = own(store);
    std::printf("done\n");
    return store.bypassed() == 0 ? rc : 3;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cache_helper: %s\n", e.what());
    return 1;
  }
}
