// SPDX-License-Identifier: MIT
// The blocking lane: threads beyond the CPU workers, made as needed, for ops that wait rather
// than compute.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace xcs::detail {

/// A lane thread with nothing to run for this long leaves.
constexpr auto kLaneIdle = std::chrono::seconds(2);
/// At most this many lane threads live at once by default (xcs::set_blocking_lane_limit);
/// tasks beyond wait for one of them.
constexpr std::uint32_t kDefaultLaneThreads = 1024;

/// Runs `task` on a lane thread, starting one if none is idle. Thread-safe. Throws (and does
/// not keep `task`) when a thread is needed and none can be started; the caller then runs the
/// task itself.
void run_blocking(std::function<void()> task);

/// True on a blocking-lane thread.
bool on_blocking_lane() noexcept;

/// The most lane threads alive at once so far.
std::uint32_t lane_threads_peak() noexcept;

/// In a child after fork(): forget the parent's lane (its threads do not exist here).
void forget_lane_after_fork() noexcept;

}  // namespace xcs::detail
