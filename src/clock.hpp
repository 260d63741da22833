// SPDX-License-Identifier: MIT
// A cheap clock for timing every node: the CPU's time-stamp counter where there is one.
#pragma once

#include <chrono>
#include <cstdint>

#if defined(__x86_64__) || defined(__i386__)
#include <x86intrin.h>
#endif

namespace xcs::detail {

/// Ticks of the cheapest monotonic clock: rdtsc on x86 (cheaper than a steady_clock read,
/// which matters when every node is timed), nanoseconds elsewhere.
inline std::uint64_t ticks() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  return __rdtsc();
#else
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::steady_clock::now().time_since_epoch())
                                        .count());
#endif
}

/// Nanoseconds on the steady clock.
inline std::int64_t now_ns() noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// A steady-clock reading and the tick count at the same instant.
struct clock_pair {
  std::uint64_t ticks;
  std::int64_t ns;
};

/// The steady-clock read bracketed by two tick reads, the tightest of `tries`, so that a
/// preemption or a slow read (the first one of a process resolves the symbol and faults in
/// the vDSO page: microseconds) does not skew the pair.
inline clock_pair read_pair(int tries = 4) noexcept {
  clock_pair best{};
  std::uint64_t best_gap = ~std::uint64_t{0};
  for (int i = 0; i < tries; ++i) {
    std::uint64_t before = ticks();
    std::int64_t ns = now_ns();
    std::uint64_t after = ticks();
    if (after - before < best_gap) {
      best_gap = after - before;
      best = {before + (after - before) / 2, ns};
    }
  }
  return best;
}

/// Nanoseconds per tick, measured against steady_clock from the program's start to now
/// (refined until a second has passed, then fixed). Thread-safe.
double ns_per_tick() noexcept;

/// CPU time of the calling thread in nanoseconds (-1 if the clock cannot be read).
std::int64_t thread_cpu_ns() noexcept;

inline std::uint64_t ticks_to_ns(std::uint64_t t) noexcept {
  return static_cast<std::uint64_t>(static_cast<double>(t) * ns_per_tick());
}

}  // namespace xcs::detail
