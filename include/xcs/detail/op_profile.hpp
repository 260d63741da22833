// SPDX-License-Identifier: MIT
// The runtime op profile: what xcs is told and learns about one op while it runs.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

namespace xcs::detail {

class concurrency_limit;

/// One `xcs::op`'s runtime state, shared by every copy of the op, every plan and every
/// thread. The IR refers to it by pointer only; the run, the monitor and the blocking lane
/// update it, and `stats()` reads it. Fields are atomics read and written relaxed: each is a
/// hint for a scheduling decision, never used to synchronize.
struct op_profile {
  op_profile(std::string op_name, bool hinted_blocking, std::uint32_t max_concurrency,
             bool is_async = false);
  op_profile(const op_profile&) = delete;
  op_profile& operator=(const op_profile&) = delete;
  virtual ~op_profile();

  const std::string name;
  /// The user said the op blocks (I/O, sleep); it runs on the blocking lane from the start.
  const bool blocking_hint;
  /// An `xcs::async_op`: its function starts the work and returns, and a completion ends it.
  /// Never blocking; its learned duration is the cost of a start, since the time from start
  /// to completion occupies no thread.
  const bool async;
  /// Set by xcs::max_concurrency: at most this many instances run at once, process-wide.
  /// Null when unbounded.
  const std::unique_ptr<concurrency_limit> limit;
  /// The monitor saw an instance sit in the kernel without using CPU (set), or the blocking
  /// lane saw one that computed or returned quickly (cleared).
  std::atomic<bool> observed_blocking{false};
  /// Learned duration of one instance in ns (a moving average; 0 = not yet measured).
  std::atomic<std::uint32_t> est_ns{0};

  bool blocking() const noexcept {
    return blocking_hint || observed_blocking.load(std::memory_order_relaxed);
  }
  /// Folds one measured duration (start to end) into est_ns; ignored for an async op.
  void learn(std::uint64_t ns) noexcept {
    if (!async) fold(ns);
  }
  /// Folds what one start of an async op cost (its function's run) into est_ns.
  void learn_start(std::uint64_t ns) noexcept { fold(ns); }

 private:
  void fold(std::uint64_t ns) noexcept;
};

/// Takes a slot of `p`'s concurrency limit for a direct call, blocking until one is free;
/// gives it back when destroyed. No-op for an unbounded op.
class direct_slot {
 public:
  explicit direct_slot(op_profile& p);
  ~direct_slot();
  direct_slot(const direct_slot&) = delete;
  direct_slot& operator=(const direct_slot&) = delete;

 private:
  concurrency_limit* limit_;
};

/// The bound of `p`'s limit (0 if none) and the most instances that ran at once.
std::uint32_t concurrency_bound(const op_profile& p) noexcept;
std::uint32_t concurrency_peak(const op_profile& p) noexcept;

}  // namespace xcs::detail
