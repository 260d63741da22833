// SPDX-License-Identifier: MIT
// How the owner of a run waits for the nodes other threads run, and how they wake it.
#pragma once

#include <atomic>
#include <cstdint>

namespace xcs::detail {

struct fiber_waiter;

/// The owner's side of a run: park until woken, and the wakers' side. One owner parks at a
/// time; any number of threads may wake.
///
/// Memory orders: a waker first publishes what the owner waits for (a node in the ready queue
/// or a decrement of the run's remaining count) with a seq_cst store or read-modify-write,
/// then calls wake_if_parked(), which reads the parked flag seq_cst. The owner sets the flag
/// seq_cst, then evaluates its predicate with seq_cst loads. In the single total order either
/// the owner's predicate sees the waker's update (and does not sleep), or the waker sees the
/// flag (and wakes it). A wake bumps an epoch that the owner read before setting the flag, so
/// a wake between the predicate and the sleep is not lost either.
class run_waiter {
 public:
  /// Parks the calling thread until woken, unless `keep_waiting()`, evaluated after the
  /// waiter is published, returns false. On a CPU worker with fibers the calling fiber is
  /// suspended and the thread runs other work; elsewhere the thread sleeps on a futex. May
  /// return without a wake (the caller re-checks its condition).
  template <class Pred>
  void park(Pred keep_waiting) noexcept {
    park(
        +[](void* p) noexcept -> bool { return (*static_cast<Pred*>(p))(); }, &keep_waiting);
  }
  /// Wakes the parked owner if there is one. Any thread. Cheap when nobody is parked (one
  /// seq_cst load).
  void wake_if_parked() noexcept {
    if (parked_.load(std::memory_order_seq_cst)) wake();
  }

 private:
  void park(bool (*keep_waiting)(void*) noexcept, void* context) noexcept;
  void wake() noexcept;

  /// Seq-cst: the owner is inside park() (see the class comment).
  std::atomic<bool> parked_{false};
  /// Bumped by each wake; a futex-parked owner sleeps while it is unchanged.
  std::atomic<std::uint32_t> epoch_{0};
  /// Set while the owner waits as a suspended fiber; taken (exchange) by the one thread that
  /// signals it.
  std::atomic<fiber_waiter*> fiber_waiter_{nullptr};
};

}  // namespace xcs::detail
