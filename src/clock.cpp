// SPDX-License-Identifier: MIT
// Calibrating the time-stamp counter against steady_clock.
#include "clock.hpp"

#include <time.h>

#include <atomic>

namespace xcs::detail {

std::int64_t thread_cpu_ns() noexcept {
  timespec ts{};
  if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts) != 0) return -1;
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

#if defined(__x86_64__) || defined(__i386__)
namespace {

/// The shortest span a ratio is taken over: two clock reads a few tens of ns apart, 0.1%.
constexpr std::int64_t kMinSpanNs = 50'000;
/// Past this span the ratio is as good as it gets, and is no longer refined.
constexpr std::int64_t kSettledNs = 1'000'000'000;

/// The ratio is measured from an anchor taken when the program starts. So the durations of
/// the first run are converted over a span at least as long as that run, not over a short
/// calibration window taken when the first duration is converted: over 50 µs, a skew of a
/// few hundred ns between the two clocks' reads made first-call op times read 0.5% low.
struct calibration {
  clock_pair anchor;
  std::atomic<double> ratio{0.0};
  /// Ticks from the anchor to the last refinement (release; 0: none yet).
  std::atomic<std::uint64_t> span_ticks{0};
  std::atomic<bool> settled{false};

  calibration() noexcept {
    (void)now_ns();  // the slow first read of the process, outside the pair
    anchor = read_pair();
  }

  /// Measures the ratio over everything since the anchor.
  void refine() noexcept {
    clock_pair now = read_pair();
    while (now.ns - anchor.ns < kMinSpanNs || now.ticks <= anchor.ticks) {
      now = read_pair();  // only within 50 µs of the program's start
    }
    ratio.store(
        static_cast<double>(now.ns - anchor.ns) / static_cast<double>(now.ticks - anchor.ticks),
        std::memory_order_relaxed);
    span_ticks.store(now.ticks - anchor.ticks, std::memory_order_release);
    if (now.ns - anchor.ns > kSettledNs) settled.store(true, std::memory_order_relaxed);
  }
};

calibration& the_calibration() noexcept {
  static calibration c;
  return c;
}

// Takes the anchor during static initialization, before main().
[[maybe_unused]] const bool g_anchored = (the_calibration(), true);

}  // namespace
#endif

double ns_per_tick() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  calibration& c = the_calibration();
  if (!c.settled.load(std::memory_order_relaxed)) {
    // Refined each time the span since the anchor has doubled: a dozen or so times in all.
    std::uint64_t span = c.span_ticks.load(std::memory_order_acquire);
    if (span == 0 || ticks() - c.anchor.ticks >= 2 * span) c.refine();
  }
  return c.ratio.load(std::memory_order_relaxed);
#else
  return 1.0;
#endif
}

}  // namespace xcs::detail
