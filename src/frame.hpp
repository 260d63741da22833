// SPDX-License-Identifier: MIT
// The per-call state of a plan's run and the run loop: dependency counting, shared with the
// pool's workers.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "pool.hpp"
#include "run_waiter.hpp"
#include "xcs/detail/async.hpp"
#include "xcs/detail/concurrency_limit.hpp"
#include "xcs/detail/op_profile.hpp"
#include "xcs/detail/op_table.hpp"
#include "xcs/detail/plan.hpp"

namespace xcs::detail {

/// The per-call state of a run. Frames are pooled by their plan, so a cached call allocates
/// nothing here.
///
/// An async node holds no thread between its start and its completion: the thread that
/// starts it goes on with other work, and the completion, from whatever thread calls it,
/// settles the node (see `settle`).
class frame final : public job, public slot_waiter, public async_sink {
 public:
  explicit frame(const plan& p);
  ~frame() override;

  /// Bytes a frame of `p` allocates (itself and its tables).
  static std::size_t bytes(const plan& p) noexcept;
  /// Prepares a run on `args`; the run adds each node to `counters[node]` where not null.
  void start(std::span<const void* const> args, std::span<op_counters* const> counters);
  /// Owner: runs the graph to completion with the pool's help; rethrows the first error.
  void run_to_end();
  void destroy_results() noexcept;
  void* value(value_id v) const noexcept;
  std::uint64_t op_ns() const noexcept { return op_ns_; }

  bool has_work() const noexcept override {
    std::uint32_t h = head_.load(std::memory_order_seq_cst);
    return h < queue_size_ && queue_[h].load(std::memory_order_seq_cst) >= 0;
  }
  void help() noexcept override;
  void slot_granted(std::uint32_t n) noexcept override;
  /// The completion of an async node arrived after its start returned: records the outcome
  /// and queues the dependents it made ready for the owner and the workers (the completing
  /// thread, the user's, runs none of them).
  void settle(async_slot& s) noexcept override;

 private:
  node_id pop() noexcept;
  /// pop(), but if the queue is empty while nodes still run, watch it a few microseconds
  /// first: in a dependency graph new work appears as soon as a running node finishes, and
  /// leaving costs a trip through the pool's lock.
  node_id pop_or_linger() noexcept;
  void push(node_id v) noexcept {
    std::uint32_t t = tail_.fetch_add(1, std::memory_order_relaxed);
    queue_[t].store(static_cast<std::int32_t>(v), std::memory_order_seq_cst);
  }
  std::uint64_t estimate(node_id n) const noexcept;
  /// Learns durations into the op profiles and adds the run to the per-op counters.
  void account() noexcept;
  bool is_blocking(node_id n) const noexcept {
    const op_profile* op = p_.nodes_[n].op;
    return op && op->blocking();
  }
  void run_chain(node_id n) noexcept;
  void execute(node_id n) noexcept;
  void record_error(node_id n, std::exception_ptr e) noexcept;
  /// Starts async node n; if it completed before its start returned, finishes it as a plain
  /// op and returns the successor to run next, else returns other ready work (or no_id).
  node_id start_async(node_id n) noexcept;
  /// Records an async node's outcome and frees its concurrency slot.
  void conclude(node_id n, async_slot& s) noexcept;
  /// Releases n's successors; returns one to run next on this thread (or no_id when
  /// `keep` is false), pushes the others and wakes help if they are worth it.
  node_id release(node_id n, bool keep) noexcept;
  void shared_work(std::uint64_t queued_ns, bool always) noexcept;
  void finish_one() noexcept;
  void offload(node_id n, concurrency_limit* limit) noexcept;

  const plan& p_;
  const std::uint32_t n_;
  // A node enters the ready queue at most twice: when its inputs are ready, and again when a
  // concurrency slot is granted to it after it parked.
  const std::uint32_t queue_size_;
  std::unique_ptr<std::atomic<std::uint32_t>[]> join_;
  std::unique_ptr<std::atomic<std::int32_t>[]> queue_;  // ready nodes; -1 = not yet written
  std::unique_ptr<std::uint8_t[]> state_;
  std::unique_ptr<std::uint64_t[]> dur_;  // ticks (see clock.hpp) each node ran
  std::unique_ptr<async_slot[]> async_;   // per node, if the plan has async nodes
  std::vector<const void*> in_ptrs_;      // one per input slot of the plan
  std::vector<const void*> call_ptrs_;    // per value; set for argument and element values
  std::byte* storage_ = nullptr;
  std::size_t storage_align_ = alignof(std::max_align_t);

  std::atomic<std::uint32_t> head_{0}, tail_{0};
  std::atomic<std::uint32_t> remaining_{0};  // seq_cst: pairs with owner_ (see run_waiter)
  std::atomic<std::uint32_t> first_error_{no_id};
  std::mutex error_mutex_;  // guards error_ and writes of first_error_
  std::exception_ptr error_;
  run_waiter owner_;
  std::atomic<bool> offered_{false};
  std::uint64_t op_ns_ = 0;
  std::span<op_counters* const> counters_;  // of this run
};

}  // namespace xcs::detail
