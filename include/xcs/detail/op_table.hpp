// SPDX-License-Identifier: MIT
// Per-function, per-op run counters, shared by every plan of one jitted function.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>

#include "xcs/detail/op_runtime.hpp"

namespace xcs::detail {

/// Counters of one op within one jitted function. Relaxed atomics: reported, never used to
/// synchronize.
struct op_counters {
  explicit op_counters(std::shared_ptr<const op_identity> o) : op(std::move(o)) {}
  std::shared_ptr<const op_identity> op;
  std::atomic<std::uint64_t> calls{0};
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> total_ns{0};
  std::atomic<std::uint64_t> max_ns{0};
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> rate_wait_ns{0};
  std::atomic<std::uint64_t> cache_hits{0};
  std::atomic<std::uint64_t> cache_misses{0};
  std::atomic<std::uint64_t> batches{0};       // a batch op's calls of its function
  std::atomic<std::uint64_t> deduplicated{0};  // its inputs sent once for several calls
};

/// The counters of every op a function's plans ran. Entries never move or go away, so plans
/// keep plain pointers to them. Thread-safe.
class op_table {
 public:
  op_counters& get(const std::shared_ptr<const op_identity>& op) {
    std::lock_guard lock(mutex_);
    for (auto& c : counters_) {
      if (c.op == op) return c;
    }
    return counters_.emplace_back(op);
  }
  template <class Fn>
  void for_each(Fn&& fn) const {
    std::lock_guard lock(mutex_);
    for (const auto& c : counters_) fn(c);
  }

 private:
  mutable std::mutex mutex_;  // guards counters_ (the deque, not the atomics)
  std::deque<op_counters> counters_;
};

}  // namespace xcs::detail
