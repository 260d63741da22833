// SPDX-License-Identifier: MIT
// Fibers for CPU workers: a node that waits for an inner run suspends, and its worker runs
// other ready work meanwhile (as google/marl does). Boost.Context stays inside src/.
#pragma once

#include <atomic>
#include <boost/context/fiber.hpp>
#include <functional>
#include <mutex>
#include <vector>

namespace xcs::detail {

class fiber_worker;

/// A context waiting to be signalled. Lives on the waiting context's stack.
struct fiber_waiter {
  /// 0: still running; 1: suspended (`cont` set); 2: signalled. The exchange that moves it
  /// decides who makes the context ready: the signaller (1 -> 2) or the waiter itself (2 -> 1).
  std::atomic<int> state{0};
  fiber_worker* worker = nullptr;
  boost::context::fiber cont;
};

/// The fibers of one CPU worker thread. Fibers never move between threads, so thread-locals
/// stay valid across a switch. Only the owning thread touches it, except `signal`.
class fiber_worker {
 public:
  /// `loop` runs the worker loop; it returns only when the worker stops. `on_ready` is called
  /// (on any thread, must not throw) when a suspended context became ready, so that the
  /// owner of this worker wakes the thread if it sleeps.
  fiber_worker(std::function<void()> loop, std::function<void()> on_ready);
  ~fiber_worker();
  fiber_worker(const fiber_worker&) = delete;
  fiber_worker& operator=(const fiber_worker&) = delete;

  /// The calling thread's fiber worker, or null (callers, surplus workers, the lane).
  static fiber_worker* current() noexcept;
  /// Whether workers use fibers in this build (not under sanitizers, which need to be told of
  /// every stack switch).
  static bool enabled() noexcept;

  /// Suspends the calling context until `w` is signalled; the thread runs the worker loop on
  /// another fiber meanwhile.
  void suspend(fiber_waiter& w);
  /// Makes `w`'s context ready to resume on its own thread. Any thread; `w` must not be
  /// touched after this returns.
  static void signal(fiber_waiter& w) noexcept;

  bool has_ready() const noexcept { return ready_count_.load(std::memory_order_acquire) > 0; }
  /// Resumes a ready context, if any; this context becomes a spare loop. Returns when it is
  /// used again.
  void run_ready();
  /// True when the worker loop runs on the thread's own stack.
  bool on_main() const noexcept;
  /// Switches to the thread's own stack so the worker can exit (no context may be suspended).
  void return_to_main();
  /// No context waits on this thread.
  bool idle() const noexcept { return suspended_ == 0; }

 private:
  void push_ready(boost::context::fiber f);
  boost::context::fiber take_loop();

  std::function<void()> loop_;
  std::function<void()> on_ready_;
  std::vector<boost::context::fiber> spare_;  // loop contexts waiting to be reused
  boost::context::fiber main_spare_;          // the thread's own stack, when spare
  int suspended_ = 0;

  std::mutex ready_mutex_;  // guards ready_
  std::vector<boost::context::fiber> ready_;
  std::atomic<int> ready_count_{0};  // release on push, acquire in has_ready
};

}  // namespace xcs::detail
