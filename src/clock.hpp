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

/// Nanoseconds per tick, calibrated against steady_clock over the process's lifetime so far
/// (the first milliseconds use a rougher figure). Thread-safe.
double ns_per_tick() noexcept;

/// CPU time of the calling thread in nanoseconds (-1 if the clock cannot be read).
std::int64_t thread_cpu_ns() noexcept;

inline std::uint64_t ticks_to_ns(std::uint64_t t) noexcept {
  return static_cast<std::uint64_t>(static_cast<double>(t) * ns_per_tick());
}

}  // namespace xcs::detail
