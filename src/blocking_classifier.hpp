// SPDX-License-Identifier: MIT
// How the monitor tells a thread that waits (I/O, sleep, a lock) from one that computes: a pure
// function of one observation window, so it can be tested without threads or clocks.
#pragma once

#include <cstdint>

namespace xcs::detail {

/// A thread that stays in one node is observed over windows of this length.
constexpr std::int64_t kWindowNs = 500'000;
/// Consecutive waiting windows before an op is marked blocking, so that one unlucky window
/// (a page fault, a short lock wait) does not move it to the blocking lane.
constexpr int kWindowsToMark = 2;

/// True if a thread used less than a quarter of a CPU over `wall_ns`. Only then is it worth
/// asking the OS whether the thread is runnable (a read of /proc). `cpu_ns` < 0: no reading.
constexpr bool used_little_cpu(std::int64_t cpu_ns, std::int64_t wall_ns) noexcept {
  return cpu_ns >= 0 && cpu_ns * 4 < wall_ns;
}

/// The verdict on one window.
struct window_verdict {
  /// The thread waited: it holds no core, so a stand-in worker may run meanwhile.
  bool waiting = false;
  /// Consecutive waiting windows, this one included (0 if it did not wait).
  int waiting_windows = 0;
  /// The op running on the thread should be marked blocking.
  bool mark_blocking = false;
};

/// Classifies one window of a thread that stayed in one node: it waited if it used little CPU
/// (`cpu_ns` used over `wall_ns` of wall time) and is not merely preempted (`runnable`: it is
/// ready to run and waits for a core, which looks the same by its CPU clock alone).
/// `waiting_windows` is the count returned for the previous window of the same node.
constexpr window_verdict classify_window(std::int64_t cpu_ns, std::int64_t wall_ns, bool runnable,
                                         int waiting_windows) noexcept {
  bool waiting = used_little_cpu(cpu_ns, wall_ns) && !runnable;
  int windows = waiting ? waiting_windows + 1 : 0;
  return {waiting, windows, windows >= kWindowsToMark};
}

}  // namespace xcs::detail
