// SPDX-License-Identifier: MIT
// Fibers for CPU workers: a node that waits for an inner run suspends, and its worker runs
// other ready work meanwhile (as google/marl does). Boost.Context stays inside src/.
#pragma once

#include <atomic>
#include <boost/context/fiber.hpp>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <vector>

namespace xcs::detail {

class fiber_worker;

/// What the sanitizers must be told about one context of a worker (the thread's own stack or
/// a fiber's) when the worker switches to it. Owned by the fiber_worker; only its thread
/// touches it.
struct fiber_stack {
  /// The stack's lowest address and size: set when a fiber's stack is allocated; for the
  /// thread's own stack, learned from ASan at its first switch away.
  const void* bottom = nullptr;
  std::size_t size = 0;
  void* fake_stack = nullptr;  ///< ASan's fake stack while the context is switched out
  void* tsan_fiber = nullptr;  ///< TSan's state of the context
};

/// A context that is not running: its Boost.Context handle and its stack record.
struct fiber_context {
  boost::context::fiber fiber;
  fiber_stack* stack = nullptr;
  explicit operator bool() const noexcept { return static_cast<bool>(fiber); }
};

/// Where a fiber_waiter is. The exchange that moves it decides who makes the context ready:
/// the signaller (suspended -> signalled) or the waiter itself (signalled -> suspended).
enum class waiter_state : int {
  running,    ///< not suspended yet
  suspended,  ///< suspended, `cont` set
  signalled,  ///< signalled
};

/// A context waiting to be signalled. Lives on the waiting context's stack.
struct fiber_waiter {
  std::atomic<waiter_state> state{waiter_state::running};
  fiber_worker* worker = nullptr;
  fiber_context cont;
};

/// The fibers of one CPU worker thread. Fibers never move between threads, so thread-locals
/// stay valid across a switch. Only the owning thread touches it, except `signal`.
///
/// Every switch goes through `switch_to`, which tells ASan (`__sanitizer_start_switch_fiber`
/// / `__sanitizer_finish_switch_fiber`) and TSan (`__tsan_switch_to_fiber`) of the stack change
/// when the build uses them, so the fiber path runs under both sanitizers.
class fiber_worker {
 public:
  /// `loop` runs the worker loop; it returns only when the worker stops. `on_ready` is called
  /// (on any thread, must not throw) when a suspended context became ready, so that the
  /// owner of this worker wakes the thread if it sleeps.
  fiber_worker(std::function<void()> loop, std::function<void()> on_ready);
  /// On the thread's own stack, with no context suspended: unwinds the spare loop contexts.
  ~fiber_worker();
  fiber_worker(const fiber_worker&) = delete;
  fiber_worker& operator=(const fiber_worker&) = delete;

  /// The calling thread's fiber worker, or null (callers, stand-in workers, the lane).
  static fiber_worker* current() noexcept;
  /// Suspensions so far in the process (relaxed; for stats() and tests).
  static std::uint64_t suspensions() noexcept;

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
  struct unwind {};  // thrown through a spare loop to end it (see ~fiber_worker)

  /// Switches to `to`. `on_arrival(from)` runs on `to`'s stack right after the switch and
  /// takes the context just left; it must not throw, except `unwind`. Returns when this
  /// context is resumed.
  template <class OnArrival>
  void switch_to(fiber_context&& to, OnArrival&& on_arrival);
  /// The sanitizers' half of a switch, on the context being left; `leaving_for_good` when it
  /// ends.
  void begin_switch(fiber_stack* to, bool leaving_for_good) noexcept;
  /// The other half, first thing on the context switched to.
  void end_switch() noexcept;

  void push_ready(fiber_context c);
  fiber_context take_loop();
  fiber_context new_loop();
  boost::context::fiber loop_main(boost::context::fiber&& from);

  std::function<void()> loop_;
  std::function<void()> on_ready_;
  std::vector<fiber_context> spare_;  // loop contexts waiting to be reused
  fiber_context main_spare_;          // the thread's own stack, when spare
  fiber_context unwound_by_;          // the context that unwinds a spare loop (~fiber_worker)
  int suspended_ = 0;

  fiber_stack main_stack_;                            // the thread's own stack
  std::vector<std::unique_ptr<fiber_stack>> stacks_;  // one per fiber made
  fiber_stack* running_ = &main_stack_;               // the context that runs now
  fiber_stack* left_ = nullptr;                       // the context of the last switch's start
  bool main_stack_scanned_ = false;                   // registered with LeakSanitizer (ASan builds)

  std::mutex ready_mutex_;  // guards ready_
  std::vector<fiber_context> ready_;
  std::atomic<int> ready_count_{0};  // release on push, acquire in has_ready
};

}  // namespace xcs::detail
