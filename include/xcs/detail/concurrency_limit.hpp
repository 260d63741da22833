// SPDX-License-Identifier: MIT
// A bound on how many instances of one op run at once, shared by every plan and thread.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>

namespace xcs::detail {

/// A run that parked a node while the op's permits were all taken.
class permit_waiter {
 public:
  /// The node now holds a permit: make it ready again. Called by the thread releasing one.
  virtual void permit_granted(std::uint32_t node) noexcept = 0;

 protected:
  ~permit_waiter() = default;
};

/// A counting limit with two kinds of waiters: nodes of a plan, which park without holding a
/// thread, and direct (plain) calls, which block their own thread. A freed permit goes to a
/// parked node first, then to a blocked direct call.
class concurrency_limit {
 public:
  explicit concurrency_limit(std::uint32_t limit) : limit_(limit) {}

  std::uint32_t limit() const noexcept { return limit_; }

  /// Takes a permit for `node` of `w`, or parks it (returns false); a parked node is handed a
  /// permit later through `w.permit_granted(node)`.
  bool acquire_or_park(permit_waiter& w, std::uint32_t node);
  /// Takes a permit, blocking this thread until one is free (direct calls).
  void acquire_blocking();
  /// Gives a permit back (to a parked node, a blocked caller, or the free ones).
  void release() noexcept;

  /// The most instances that ever ran at once (for tests and stats).
  std::uint32_t peak() const noexcept;

 private:
  struct parked {
    permit_waiter* waiter;
    std::uint32_t node;
  };
  const std::uint32_t limit_;
  mutable std::mutex mutex_;  // guards everything below
  std::condition_variable free_cv_;
  std::uint32_t running_ = 0;
  std::uint32_t peak_ = 0;
  std::uint32_t blocked_ = 0;
  std::deque<parked> parked_;
};

}  // namespace xcs::detail
