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

/// Nanoseconds per tick, measured against steady_clock from the program's start to now
/// (refined until a second has passed, then fixed). Thread-safe.
double ns_per_tick() noexcept;

/// CPU time of the calling thread in nanoseconds (-1 if the clock cannot be read).
std::int64_t thread_cpu_ns() noexcept;

inline std::uint64_t ticks_to_ns(std::uint64_t t) noexcept {
  return static_cast<std::uint64_t>(static_cast<double>(t) * ns_per_tick());
}

}  // namespace xcs::detail
