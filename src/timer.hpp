// SPDX-License-Identifier: MIT
// The timer thread: one process-wide thread that runs short callbacks at given times, for
// deadlines, retries and rate limits.
#pragma once

#include <chrono>
#include <cstdint>

namespace xcs::detail {

using steady_time = std::chrono::steady_clock::time_point;

/// A callback the timer thread runs: short, noexcept, never blocks for long (every other timer
/// waits for it). It runs without the timer's lock held, so it may call add_timer and
/// cancel_timer.
using timer_fn = void (*)(void* context, std::uint64_t arg) noexcept;

/// Runs `fn(context, arg)` on the timer thread at `when` (at once if it has passed); timers
/// due at the same time run in the order they were added. Returns an id (never 0) for
/// cancel_timer; ids are not reused within a process (nor by its children after fork()).
/// Starts the thread on first use. Thread-safe. Throws std::bad_alloc when it cannot store
/// the timer and std::system_error when it cannot start the thread; the timer is then not
/// added. No allocation once as many timers as ever before are pending.
///
///   std::uint64_t id = add_timer(std::chrono::steady_clock::now() + 10ms, &expire, run, node);
///   ...
///   if (cancel_timer(id)) { /* expire() will not run */ }
std::uint64_t add_timer(steady_time when, timer_fn fn, void* context, std::uint64_t arg);

/// Cancels timer `id`: true if it had not started (it never will). If it is running on another
/// thread, waits until it has returned, then returns false; on the timer thread (from inside a
/// callback) it never waits. An id that already ran, or is unknown: false. Thread-safe; never
/// throws. Do not hold a lock that the callback takes while calling this.
bool cancel_timer(std::uint64_t id) noexcept;

/// For tests: the timer thread exists.
bool timer_thread_started() noexcept;

/// Changes in a child after fork(), where the parent's pending timers will never run (the child
/// starts a timer thread of its own on its first add_timer): a user that keeps a timer armed
/// across calls compares this with the value it armed the timer under.
std::uint64_t timer_epoch() noexcept;

}  // namespace xcs::detail
