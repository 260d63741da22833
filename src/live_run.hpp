// SPDX-License-Identifier: MIT
// The live run of a staged call: nodes join while the body runs, each starts as soon as its
// inputs are ready, and a read waits only for the value it needs.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "pool.hpp"
#include "xcs/detail/async.hpp"
#include "xcs/detail/concurrency_limit.hpp"
#include "xcs/detail/graph.hpp"

namespace xcs::detail {

class op_table;

/// A run whose graph grows while it runs. The body's thread (the owner) appends nodes and
/// reads values; the pool's workers, the blocking lane and the owner run ready nodes.
///
/// Exceptions follow the direct call: a node that comes after the first thrower in program
/// order does not start; a read whose value cannot be computed throws the exception of the
/// first thrower among the nodes recorded so far (once those before it have finished); an
/// exception no read needed is rethrown by `drain` at the end of the call.
///
/// Every field below the mutex is guarded by it; the node records themselves never move
/// (a deque grown only at the end), so a thread running a node reads its kernel and inputs
/// without the lock. An async node stays running, holding no thread, from its start until its
/// completion settles it; its dependents then go to the ready queue.
class live_run final : public job, public slot_waiter, public async_sink {
 public:
  /// `g` is the trace's graph, read only on the owner's thread; `args` the call's arguments.
  live_run(const graph& g, std::span<const void* const> args);
  ~live_run() override;
  live_run(const live_run&) = delete;
  live_run& operator=(const live_run&) = delete;

  /// Owner: node `n` was just added to the graph; starts it once its inputs are ready.
  void append(node_id n);
  /// Owner: waits for `v` and returns its address. Throws the op exception that keeps `v`
  /// from being computed (the same object the op threw).
  const void* wait_value(value_id v);
  /// Owner: runs every node not yet run (as the direct call would have), waits for all, and
  /// returns the exception of the first thrower in program order that no read delivered.
  std::exception_ptr drain() noexcept;
  /// Owner, after drain(): the address of `v`.
  void* value(value_id v);

  /// Reads that found their value not yet computed, and op/wall time of the run so far.
  std::uint64_t syncs() const noexcept { return syncs_; }
  std::uint64_t op_ns() const noexcept;
  /// Adds each node's count and duration to the function's per-op counters.
  void account(op_table& ops) const;

  // job
  bool has_work() const noexcept override;
  void help() noexcept override;
  // slot_waiter
  void slot_granted(std::uint32_t node) noexcept override;
  // async_sink: an async node's completion came after its start returned.
  void settle(async_slot& s) noexcept override;

 private:
  enum class state : std::uint8_t { pending, ready, running, constructed, ran, threw, skipped };
  struct node_rec {
    const kernel* k = nullptr;
    const void* fn = nullptr;
    op_profile* op = nullptr;
    std::unique_ptr<const void*[]> inputs;
    std::unique_ptr<async_slot> async;  // for an async op's node
    std::uint32_t input_count = 0;
    void* out = nullptr;
    std::vector<node_id> preds;  // distinct producer nodes among the inputs
    // Guarded by mutex_:
    std::vector<node_id> succs;
    std::uint32_t join = 0;
    state st = state::pending;
    bool has_slot = false;
    bool cancelled = false;  // abandoned when a read delivered an earlier node's exception
    bool bad_input = false;  // an input's producer threw or was skipped
    std::uint32_t mark = 0;  // == mark_ while the owner wants it for the current read
    std::uint64_t ticks = 0;
    std::exception_ptr error;
  };

  static bool final(state s) noexcept {
    return s == state::constructed || s == state::ran || s == state::threw || s == state::skipped;
  }
  void catch_up_values();
  const void* address_of(value_id v);
  node_id producer(value_id v) const;

  // With mutex_ held.
  void make_ready(std::unique_lock<std::mutex>& lock, node_id n);
  /// Which ready node to take: any, one the owner's read needs, or one that is cheap to start
  /// (an async op, which holds no thread once started, or an operator).
  enum class pick : std::uint8_t { any, marked, cheap };
  node_id pop(pick which);
  void share(std::unique_lock<std::mutex>& lock);
  void mark_ancestors(node_id target);
  bool settled_before(node_id limit) const;

  /// Takes node n (popped, state running) through its turn: slot, lane or here, completion.
  void take_turn(node_id n) noexcept;
  state execute(node_id n) noexcept;
  /// Starts async node n; completes it here if its completion came before the start returned.
  void start_async(node_id n, node_rec& r) noexcept;
  /// Records an async node's outcome, frees its slot and completes it.
  void conclude(node_id n, node_rec& r, async_slot& s) noexcept;
  void complete(node_id n, state outcome) noexcept;
  /// Owner: runs marked ready nodes (or, if `any`, every ready node) until `done()` holds.
  template <class Done>
  void owner_wait(bool any, Done done);
  [[noreturn]] void deliver(std::unique_lock<std::mutex>& lock);

  const graph& g_;
  std::span<const void* const> args_;
  // Owner-only: addresses of the values seen so far (null for results not yet appended).
  std::vector<const void*> addr_;

  mutable std::mutex mutex_;
  std::condition_variable owner_cv_;  // the owner waits here for a node to finish
  bool owner_waiting_ = false;
  std::deque<node_rec> nodes_;
  std::deque<node_id> ready_;
  std::uint32_t running_ = 0;    // popped and not yet complete
  std::uint32_t remaining_ = 0;  // appended and not yet final
  std::uint32_t first_error_ = no_id;
  std::uint32_t mark_ = 0;
  bool offered_ = false;
  std::uint64_t syncs_ = 0;
  /// seq_cst: pairs with the pool's sleep protocol (has_work).
  std::atomic<std::uint32_t> ready_count_{0};
};

}  // namespace xcs::detail
