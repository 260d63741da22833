// SPDX-License-Identifier: MIT
// Calibrating the time-stamp counter against steady_clock.
#include "clock.hpp"

#include <time.h>

#include <atomic>
#include <thread>

namespace xcs::detail {

std::int64_t thread_cpu_ns() noexcept {
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return -1;
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

double ns_per_tick() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  // The first call takes a short reference; later calls refine the ratio over a longer span
  // until it is settled (one second), after which it is read-only.
  struct calibration {
    std::uint64_t tsc0;
    std::int64_t ns0;
    std::atomic<double> ratio;
    std::atomic<bool> settled{false};
    calibration() : tsc0(ticks()), ns0(now_ns()), ratio(0.0) {
      // 50 µs of spinning for a first figure within a few percent.
      std::int64_t end = ns0 + 50'000;
      while (now_ns() < end) {
      }
      update();
    }
    void update() noexcept {
      std::uint64_t t = ticks();
      std::int64_t n = now_ns();
      if (t > tsc0 && n > ns0) {
        ratio.store(static_cast<double>(n - ns0) / static_cast<double>(t - tsc0),
                    std::memory_order_relaxed);
      }
      if (n - ns0 > 1'000'000'000) settled.store(true, std::memory_order_relaxed);
    }
  };
  static calibration c;
  if (!c.settled.load(std::memory_order_relaxed)) c.update();
  return c.ratio.load(std::memory_order_relaxed);
#else
  return 1.0;
#endif
}

}  // namespace xcs::detail
