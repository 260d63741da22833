// SPDX-License-Identifier: MIT
// Per-function, per-op run counters, shared by every plan of one jitted function.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>

#include "xcs/detail/counter_slot.hpp"
#include "xcs/detail/op_runtime.hpp"

namespace xcs::detail {

/// Counters of one op within one jitted function. Relaxed atomics: reported, never used to
/// synchronize. What every call adds to (its calls and time) is kept per counter slot, so the
/// thread that holds a slot adds without a locked instruction (counter_slot.hpp).
struct op_counters {
  explicit op_counters(std::shared_ptr<const op_identity> o) : op(std::move(o)) {}
  std::shared_ptr<const op_identity> op;
  struct per_slot {
    std::atomic<std::uint64_t> calls{0};
    std::atomic<std::uint64_t> total_ns{0};
  };
  per_slot slots[kCounterSlots];
  std::uint64_t calls() const noexcept { return sum(&per_slot::calls); }
  std::uint64_t total_ns() const noexcept { return sum(&per_slot::total_ns); }
  std::atomic<std::uint64_t> errors{0};
  std::atomic<std::uint64_t> max_ns{0};
  std::atomic<std::uint64_t> retries{0};
  std::atomic<std::uint64_t> timeouts{0};
  std::atomic<std::uint64_t> rate_wait_ns{0};
  std::atomic<std::uint64_t> cache_hits{0};
  std::atomic<std::uint64_t> cache_misses{0};
  std::atomic<std::uint64_t> batches{0};       // a batch op's calls of its function
  std::atomic<std::uint64_t> deduplicated{0};  // its inputs sent once for several calls

 private:
  std::uint64_t sum(std::atomic<std::uint64_t> per_slot::*field) const noexcept {
    std::uint64_t t = 0;
    for (const per_slot& c : slots) t += (c.*field).load(std::memory_order_relaxed);
    return t;
  }
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
