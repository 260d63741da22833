// SPDX-License-Identifier: MIT
// An op's runtime state: what xcs learns about one op while it runs, beside its identity.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <string>

#include "xcs/detail/graph.hpp"

namespace xcs::detail {

class concurrency_limit;

/// One `xcs::op`'s runtime state, shared by every copy of the op, every plan and every
/// thread. Its base is the op's immutable identity, which is all the IR names; the run engine,
/// the monitor and the blocking lane reach the state from it (`of`) and update it, and
/// `stats()` reads it. Fields are atomics read and written relaxed: each is a hint for a
/// scheduling decision, never used to synchronize.
struct op_runtime : op_identity {
  op_runtime(std::string op_name, bool hinted_blocking, std::uint32_t max_concurrency,
             bool is_async = false);
  ~op_runtime() override;

  /// The runtime state of the op whose identity is `id` (every op identity is made as the
  /// base of an op_runtime: xcs::op, xcs::async_op and nested jitted calls make them).
  static op_runtime& of(const op_identity& id) noexcept {
    return const_cast<op_runtime&>(static_cast<const op_runtime&>(id));
  }

  /// Set by xcs::max_concurrency: at most this many instances run at once, process-wide.
  /// Null when unbounded.
  const std::unique_ptr<concurrency_limit> limit;
  /// The monitor saw an instance sit in the kernel without using CPU (set), or the blocking
  /// lane saw one that computed or returned quickly (cleared). Read on every dispatch.
  std::atomic<bool> observed_blocking{false};
  /// Learned duration of one instance in ns (a moving average; 0 = not yet measured).
  /// Written after runs, so on a line of its own, away from what every dispatch reads.
  alignas(64) std::atomic<std::uint32_t> est_ns{0};

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

/// Takes a permit of `p`'s concurrency limit for a direct call, blocking until one is free;
/// gives it back when destroyed. No-op for an unbounded op.
class direct_permit {
 public:
  explicit direct_permit(op_runtime& p);
  ~direct_permit();
  direct_permit(const direct_permit&) = delete;
  direct_permit& operator=(const direct_permit&) = delete;

 private:
  concurrency_limit* limit_;
};

/// The bound of `p`'s limit (0 if none) and the most instances that ran at once.
std::uint32_t concurrency_bound(const op_runtime& p) noexcept;
std::uint32_t concurrency_peak(const op_runtime& p) noexcept;

}  // namespace xcs::detail
