// SPDX-License-Identifier: MIT
// The blocking lane: threads beyond the CPU workers, made as needed, for ops that wait rather
// than compute.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>

namespace xcs::detail {

/// A lane thread with nothing to run for this long retires. A new task goes to the thread idle
/// for the shortest time, so after a burst the threads it needed beyond the steady load are
/// the ones left idle, and they retire.
constexpr auto kLaneIdle = std::chrono::milliseconds(500);
/// The default of xcs::blocking_thread_limit().
constexpr std::uint32_t kDefaultLaneLimit = 1024;

/// Runs `task` on a lane thread: an idle one, else a new one while fewer than the limit are
/// alive, else the first one to finish its task. Thread-safe. Throws (and does not keep
/// `task`) when a thread is needed and none can be started; the caller then runs the task
/// itself.
void run_blocking(std::function<void()> task);

/// True on a blocking-lane thread.
bool on_blocking_lane() noexcept;

/// Lane threads alive now.
std::uint32_t lane_threads() noexcept;
/// The most lane threads alive at once so far.
std::uint32_t lane_threads_peak() noexcept;

/// In a child after fork(): forget the parent's lane (its threads do not exist here).
void forget_lane_after_fork() noexcept;

}  // namespace xcs::detail
