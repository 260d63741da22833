// SPDX-License-Identifier: MIT
// The component's one event thread: it polls every Redis connection of the process, runs tasks
// other threads post, and keeps the timers of rate-limit waits.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "address.hpp"

namespace xcs::detail::redis {

class connection;

/// One per process, started on first use: a thread in ppoll() on an eventfd (posted tasks),
/// the sockets of the connections, and the earliest timer or request deadline. Nothing on it
/// blocks: a waiting op is a queue entry and at most a timer, never a thread. In a child after
/// fork() the parent's loop is forgotten (its thread is not there; its sockets are closed in
/// the child) and the first use makes a new one; epoch() tells users that this happened.
class event_loop {
 public:
  using task = std::function<void()>;

  /// The process's loop. Throws std::system_error when the thread or the eventfd cannot be
  /// made, std::bad_alloc. Thread-safe.
  static event_loop& get();
  /// Changes in a child after fork(): what a user got from get() before belongs to the parent.
  static std::uint64_t epoch() noexcept;

  /// The connection to `where` (one per host, port and database), made on first use; it
  /// connects on its first request. Lives as long as the loop. Thread-safe.
  std::shared_ptr<connection> connection_to(const address& where);

  /// Runs `t` on the event thread soon, after the tasks posted before it. `t` must not throw.
  /// Thread-safe; throws std::bad_alloc (nothing is posted then).
  void post(task t);

  // ---- the event thread only ----

  /// Runs `t` at `when` (steady clock); `t` must not throw. Throws std::bad_alloc.
  void add_timer(std::chrono::steady_clock::time_point when, task t);

 private:
  event_loop();
  void run() noexcept;
  void run_due_timers();
  void close_in_child() noexcept;
  // fork() handlers, registered by the first get().
  static void lock_for_fork() noexcept;
  static void unlock_in_parent() noexcept;
  static void forget_in_child() noexcept;

  const int wake_fd_;  // an eventfd: written when a task is posted to an idle loop

  /// Guards posted_, wake_pending_ and connections_. Held across fork() (with the registry's
  /// lock) so that a child sees whole values when it closes the parent's sockets.
  std::mutex mutex_;
  std::vector<task> posted_;
  bool wake_pending_ = false;  // wake_fd_ was written since the loop last took posted_
  std::map<std::string, std::shared_ptr<connection>> connections_;

  /// The event thread's own: timers by (when, serial), so equal times run in the order added.
  std::map<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>, task> timers_;
  std::uint64_t timer_serial_ = 0;
};

}  // namespace xcs::detail::redis
