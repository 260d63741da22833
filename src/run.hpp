// SPDX-License-Identifier: MIT
// The run engine: one call's nodes, run by dependency counting on the calling thread, the
// pool's workers and the blocking lane. A plan's run has its node table frozen in advance; a
// staged call's run has it appended while the body runs. The node lifecycle is written once.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <stop_token>
#include <vector>

#include "grow_array.hpp"
#include "pool.hpp"
#include "run_node.hpp"
#include "run_waiter.hpp"
#include "xcs/detail/arg_copy.hpp"
#include "xcs/detail/async.hpp"
#include "xcs/detail/cache_store.hpp"
#include "xcs/detail/call_limits.hpp"
#include "xcs/detail/concurrency_limit.hpp"
#include "xcs/detail/graph.hpp"
#include "xcs/detail/op_runtime.hpp"
#include "xcs/detail/plan.hpp"
#include "xcs/detail/token_source.hpp"

namespace xcs::detail {

class op_table;
struct op_counters;

/// What one finished run measured, for the function's statistics.
struct run_times {
  std::uint64_t op_ns = 0;    ///< the ops' own time: what the direct call would spend in them
  std::uint64_t wall_ns = 0;  ///< the call's wall time
  std::uint32_t peak_in_flight = 0;  ///< staged runs: the most nodes in flight at once
  std::uint32_t deepest = 0;         ///< staged runs: the longest chain of dependent nodes
};

/// One call's run. Runs are reused: a plan keeps its runs in its cache entry, and a staged
/// signature keeps its own, so a cached call allocates nothing here.
///
/// The node lifecycle (`run_chain`): skip rule -> result cache -> rate-limit tokens ->
/// concurrency permit -> stop token -> async start, blocking lane or run here -> conclude ->
/// release successors -> finish (which ends the node's flight in the cache, if it owns one).
/// Exceptions follow the direct call: a node after the first thrower in program order does not
/// start; the run rethrows that thrower's exception (the same object) as soon as every node before
/// it has finished (fail fast), and the nodes still running after it are asked to stop.
///
/// A bounded call (a deadline or a stop token, its own or inherited) ends at the deadline or
/// stop: no node starts after it, running ones are asked to stop, and the owner, which runs no
/// op itself in such a call (they go to the lane), returns at once. A call that ends with
/// nodes still running leaves them behind: the run holds its own copy of the arguments, so
/// `abandon` hands it to the reaper, which frees it once its last node is done.
///
/// A staged call adds three things, all on the owner's thread: `append` links a new node to
/// its producers (lock-free: a producer's successor list is closed when it finishes), a read
/// (`wait_value`) runs what the value needs and cheap work the direct call would have done
/// by then, and a delivered exception that the body catches abandons the nodes recorded
/// after the thrower (the `abandon_below_` watermark).
class run final : public job,
                  public permit_waiter,
                  public token_waiter,
                  public cache_waiter,
                  public async_sink {
 public:
  /// A run of `p`, reused by every call of it.
  explicit run(const plan& p);
  /// A staged run, reused by the calls of one staged signature.
  run();
  ~run() override;
  run(const run&) = delete;
  run& operator=(const run&) = delete;

  /// Bytes a run of `p` allocates (itself and its tables); see run_bytes in plan.hpp.
  static std::size_t bytes(const plan& p) noexcept;

  /// Prepares a call on `args` (plan runs: `g` is the plan's graph; staged runs: the trace's,
  /// which grows while the call runs). The run copies the arguments with `copier` (null:
  /// they are not copyable, and it reads the caller's). Each node's run is added to
  /// `counters[node]` where not null, or, for a staged run, to `ops`. Takes the calling
  /// thread's limits (call_limits::current()): a bounded call arms its deadline and stop.
  void reset(const graph& g, std::span<const void* const> args, const arg_copier* copier,
             std::span<op_counters* const> counters, op_table* ops);

  /// Plan runs, owner: runs every node with the pool's help and rethrows the first error.
  void run_to_end();
  /// Staged runs, owner: node `n` was just recorded; it starts once its inputs are ready.
  void append(node_id n);
  /// Staged runs, owner: waits for `v` and returns its address, running what it needs.
  /// Throws the op exception that keeps `v` from being computed (the object the op threw).
  /// `serial` is set when the read waited while no other node of the call was in flight and
  /// every node recorded since the previous read leads to the value.
  const void* wait_value(value_id v, bool& serial);
  /// Staged runs, owner: runs every node not yet run and waits for all; returns the
  /// exception of the first thrower in program order that no read delivered.
  std::exception_ptr drain() noexcept;
  /// Owner, after the run: the address of `v`.
  void* value(value_id v) noexcept;
  /// Owner, after the run: what it measured.
  const run_times& times() const noexcept { return times_; }
  /// Reads that found their value not yet computed.
  std::uint64_t syncs() const noexcept { return syncs_; }
  std::uint32_t node_count() const noexcept { return count_; }
  /// Owner, after the run: destroys the nodes' results (and the arguments' copy).
  void destroy_results() noexcept;
  /// Owner, after the run: nodes of the call are still running or queued (it ended early: a
  /// deadline, a stop, or a failure known before they finished).
  bool unfinished() const noexcept {
    return remaining_.load(std::memory_order_acquire) != 0 ||
           stragglers_.load(std::memory_order_acquire) != 0;
  }
  /// Owner, after the call, before the run is reused: if nodes of the call still run (an
  /// early end), keeps `keep` (a plan's run: the plan) and, for a staged run, the graph's
  /// constants and ops alive, and hands the run to the reaper, which frees it once its last
  /// node is done: true, and the caller never touches it again. Otherwise (or with no memory
  /// for that: then it waits for its nodes) makes sure the run has left the pool: false.
  bool leave_behind(std::shared_ptr<const void> keep) noexcept;
  /// The reaper's turn: skips what is queued; true once the run may be freed.
  bool reap() noexcept;

  // job
  bool has_work() const noexcept override;
  void help() noexcept override;
  // permit_waiter: a node parked for a concurrency permit now holds one.
  void permit_granted(std::uint32_t n) noexcept override;
  // token_waiter: a node queued for rate-limit tokens now holds them, or will get none.
  void tokens_granted(std::uint32_t n) noexcept override;
  void tokens_failed(std::uint32_t n, std::exception_ptr e) noexcept override;
  // cache_waiter: a node waiting for another instance's result of its key gets it, or the key.
  void cache_filled(std::uint32_t n, std::shared_ptr<const void> value) noexcept override;
  void cache_owned(std::uint32_t n) noexcept override;
  // async_sink: an async node's completion came after its start returned.
  void settle(async_slot& s) noexcept override;

 private:
  using edge = successor_edge;
  using batch = call_batch;

  /// A node's outcome (node_state::outcome).
  enum outcome : std::uint8_t {
    pending = 0,
    constructed = 1,  // ran; its result is in storage
    ran = 2,          // ran; void result
    threw = 3,
    skipped = 4,  // not started: an earlier node threw, an input is missing, or abandoned
  };
  static bool is_final(std::uint8_t o) noexcept { return o != pending; }
  static bool succeeded(std::uint8_t o) noexcept { return o == constructed || o == ran; }
  /// A node enters the ready queue at most this often: ready, and again with a permit.
  static constexpr std::uint32_t kQueueCellsPerNode = 2;
  /// ... and a node of an op with a policy once more per attempt for each of a permit, its
  /// tokens and the retry, once for a stop that withdraws it from a wait, and, for a cached
  /// op, once when the wait for another instance's result of its key ends.
  static std::uint32_t queue_cells(const op_runtime* op) noexcept;
  /// One attempt of an op with a timeout, which may outlive its node's turn (run_policy.cpp).
  struct attempt;
  /// How an attempt ended for the thread that ran it: the node is done (release and finish
  /// it), a retry is scheduled, or the attempt had timed out and is discarded.
  enum class attempt_end : std::uint8_t { done, retrying, lost };
  /// What taking a node's tokens came to: taken, queued (parked), or failed (bad weight).
  enum class token_step : std::uint8_t { taken, parked, failed };
  /// What a cached op's node's look at the cache came to: a miss (it runs the op), a hit (its
  /// result is a copy), parked (another instance computes its key), or failed (its inputs'
  /// key threw; recorded).
  enum class cache_look : std::uint8_t { miss, hit, parked, failed };
  enum class wait_kind : std::uint8_t { tokens, retry, cache };
  /// A node that waits for something other than its inputs: tokens, a retry's backoff, or
  /// another instance's result of its cache key.
  struct waiting_node {
    node_id n;
    std::uint64_t timer;  // a retry's timer (0: another wait, or a retry not yet armed)
    wait_kind what;
  };

  /// What a chain runs on this thread: any node, or (the owner in a read) what the read
  /// needs and what is cheap, an op that would hold the owner long going to the lane; or
  /// (the owner of a bounded call, which must be free to return at its deadline) no op.
  enum class chain_policy : std::uint8_t { any, needed, no_ops };
  /// How a call stopped (stopped_).
  enum stop_kind : std::uint8_t {
    not_stopped = 0,
    deadline_passed = 1,
    stop_requested = 2,
    ended = 3,  // the owner left early (fail fast): nothing more starts
  };
  struct chunk {
    std::unique_ptr<std::byte[]> bytes;
    std::size_t size;
  };
  /// The mark of a successor list whose node has finished: no node may join it any more.
  static edge* closed() noexcept;

  const node_layout& info(node_id n) const noexcept {
    return plan_ ? plan_->nodes()[n] : own_info_[n];
  }
  std::uint64_t estimate(node_id n) const noexcept;
  bool holds_thread_long(node_id n) const noexcept;

  // The ready queue: each node enters it at most twice (ready, and again once a permit of its
  // op's concurrency limit is granted to it after it parked).
  node_id pop() noexcept;
  node_id pop_or_linger() noexcept;
  void push(node_id n) noexcept;
  /// Whether queued work wakes a thread: only if it is worth a wake, or always (a thread
  /// that will not run it itself hands it on).
  enum class wake : std::uint8_t { if_worth, always };
  void share(std::uint64_t queued_ns, wake when) noexcept;

  // The node lifecycle.
  void run_chain(node_id n, chain_policy policy) noexcept;
  /// Plan runs: whether this call is worth less than one wake, so that no other thread could
  /// take part profitably: every node plain and every op measured, not blocking, and cheap.
  bool too_cheap_to_share() const noexcept;
  /// Plan runs, owner: the lifecycle of a call too cheap to share, on this thread alone.
  void run_in_order() noexcept;
  /// Plan runs, owner: starts the roots and runs chains with the pool's help until the end.
  void run_shared();
  /// A node of an op with a policy after its policy's gate (the result cache, then tokens): it
  /// goes on, waits (queued again later), or is settled (a cache hit, or a failure recorded).
  enum class gate : std::uint8_t { open, waits, settled };
  gate pass_policy(node_id n) noexcept;
  /// Whether node `n`, about to run, goes to the blocking lane instead of running here.
  bool runs_elsewhere(node_id n, chain_policy policy) const noexcept;
  void note_started(node_state& s) noexcept;  // staged runs: for the peak in flight
  bool must_skip(node_id n) const noexcept;
  /// Marks `n` skipped (it did not start), and, for a batch op's call, leaves its batch.
  void skip(node_id n) noexcept;
  /// Runs one attempt of node `n` on this thread: execute_plain, or else execute.
  attempt_end run_attempt(node_id n, const node_layout& ni, node_state& s) noexcept;
  /// Runs one attempt of a node that is not plain, with what its op's policy, the call's
  /// limits and its instance's stop token set around it (run_policy.cpp).
  attempt_end execute(node_id n) noexcept;
  /// Runs a plain node (see plain() in run.cpp) to its outcome: the common case.
  void execute_plain(node_id n, const node_layout& ni, node_state& s) noexcept;
  /// Calls an op node's kernel on this thread into `out`, watched by the monitor and timed.
  void invoke_timed(const node_layout& ni, void* out, std::exception_ptr& error,
                    std::uint64_t& took, std::uint64_t& cpu) noexcept;
  node_id start_async(node_id n) noexcept;

  // Batch ops (run_batch.cpp): their calls start by joining their batch, which is sent once
  // every member has started or been skipped.
  /// A batch op's call starts: its slot is prepared, and it arrives at its batch. Returns
  /// no_id: the call is settled when its batch's outcome comes.
  node_id join_batch(node_id n) noexcept;
  /// A batch op's call was skipped: it arrives at its batch with nothing to send.
  void leave_batch(node_id n) noexcept;
  void arrive_at_batch(batch& b) noexcept;
  /// Every member has arrived: sends the started ones (if any) to the op's batch function.
  void send_batch(batch& b) noexcept;
  /// Every started member of `b`, which could not be sent, fails with `e`.
  void fail_batch(batch& b, const std::exception_ptr& e) noexcept;
  std::span<const node_id> batch_members(const batch& b) const noexcept;
  /// Plan runs: every batch waits for all its members again.
  void reset_batches() noexcept;
  /// Staged runs, owner: puts node `n` (a batch op's call, linked) into the open batch of its
  /// op and depth, or a new one.
  void add_to_batch(node_id n);
  /// Staged runs, owner: no member joins the open batches any more; each is sent once its
  /// members have arrived. Called before every wait of the owner.
  void close_batches() noexcept;
  attempt_end conclude(node_id n, async_slot& s) noexcept;
  /// An attempt of `n` ended with `e` (null: its result is in place, outcome `ok`): stores the
  /// outcome, or schedules a retry.
  attempt_end conclude_attempt(node_id n, std::exception_ptr e, std::uint8_t ok) noexcept;

  // Policies (run_policy.cpp): the result cache, rate limits, retries, timeouts.
  /// The cache step of a cached op's node: looks its key up, joins its flight, or takes the
  /// result or the ownership it was handed.
  cache_look look_up(node_id n) noexcept;
  /// A hit: constructs the node's result from the cached `value`.
  cache_look from_cache(node_id n, const std::shared_ptr<const void>& value) noexcept;
  /// A node that owns its key is done: its result goes to the cache and the waiters, or, if
  /// it did not succeed, the key to the next waiter.
  void end_flight(node_id n) noexcept;
  token_step take_tokens(node_id n) noexcept;
  bool schedule_retry(node_id n, const std::exception_ptr& e) noexcept;
  static void retry_due(void* r, std::uint64_t n) noexcept;
  attempt* begin_attempt(node_id n, bool async) noexcept;
  static void attempt_timed_out(void* at, std::uint64_t) noexcept;
  static void* attempt_out(attempt* at) noexcept;
  static async_slot& attempt_slot(attempt* at) noexcept;
  /// The op's thread is done with `at`: true if it won (its outcome counts; it frees `at`
  /// with free_attempt), false if the attempt had timed out.
  bool claim(attempt* at) noexcept;
  void free_attempt(attempt* at) noexcept;
  /// The op's thread, after an attempt that timed out: discards its result and frees it.
  void discard(attempt* at, bool has_value) noexcept;
  /// Ends the waits of nodes waiting for tokens or a retry (the call stopped): each goes back
  /// to the queue, where it is skipped.
  void end_waits() noexcept;
  void add_waiting(waiting_node w);
  void remove_waiting(node_id n) noexcept;
  /// The key that orders a node's waits for tokens and permits: call, then program order.
  std::uint64_t order_key(node_id n) noexcept;
  void offload(node_id n, concurrency_limit* limit) noexcept;
  /// What the thread that finished a node does with the successors it made ready: keep one
  /// to run next and queue the rest, or queue them all (it will not run any).
  enum class successor_use : std::uint8_t { keep_one, queue_all };
  node_id release(node_id n, successor_use use) noexcept;
  void finish(node_id n) noexcept;
  void record_error(node_id n, std::exception_ptr e) noexcept;

  // Stops.
  /// Gives node `n` its instance's stop source (already requested if the node is doomed).
  void arm_stop(node_id n) noexcept;
  /// Ends the call for `why`: no node starts from now on, running ones are asked to stop.
  void stop(stop_kind why) noexcept;
  /// Asks the instances of nodes `from` and after to stop.
  void request_stops(node_id from) noexcept;
  /// Bounded calls: arms the deadline's timer and the stop token's callback, and undoes it.
  void arm_limits(const call_limits& l);
  void disarm_limits() noexcept;
  /// The owner at the end of a call: an early end stops what is left; leaves the pool unless
  /// nodes still run, accounts, and returns the exception the call ends with.
  std::exception_ptr end_call() noexcept;
  /// The first op's error if it is settled (the direct call would have reached it), else the
  /// stop's (a deadline or a cancellation), else the error, if any.
  std::exception_ptr end_error() noexcept;
  /// Owner: every node before the first error has finished (false if there is none).
  bool error_settled() noexcept;
  /// Owner: the first error is settled and, if the call stopped at a deadline or a stop, it
  /// comes before the point where it stopped: the direct call would have thrown it.
  bool op_error_wins() noexcept;
  void copy_args(std::span<const void* const> args, const arg_copier* copier) noexcept;
  /// reset()'s end: a plan run's nodes and this call's value addresses, or a staged run's tables.
  void reset_plan_nodes(const graph& g, std::span<const void* const> args) noexcept;
  void reset_staged_tables() noexcept;

  // The owner's side.
  /// What the owner waits for: every node, node `n`, or every node before the first error;
  /// or the call's end (every node, or a settled first error: fail fast). Each wait also
  /// ends when the call stops.
  enum class wait_for : std::uint8_t { all_nodes, node, first_error_settled, end };
  bool waited_for(wait_for what, node_id n) noexcept;
  /// Runs ready nodes until `what` holds; parks in between, woken by the end of the node it
  /// waits for or of the last node.
  void owner_wait(chain_policy policy, wait_for what, node_id n) noexcept;
  std::byte* allocate_storage(std::size_t size, std::size_t align);
  void leave_pool() noexcept;
  void account() noexcept;
  /// Adds each node's run to its op's counters (in `slot`) and returns the ops' time: every
  /// run, or a plan run whose ops have no policy and no batch. counters_of: node `n`'s (of
  /// `op`), or null; `last` are those of `last_op`.
  std::uint64_t account_all(std::uint32_t slot, double ns_per_tick) noexcept;
  std::uint64_t account_plain(std::uint32_t slot, double ns_per_tick) noexcept;
  op_counters* counters_of(node_id n, const op_runtime* op, const op_runtime* last_op,
                           op_counters* last) noexcept;
  void catch_up_values();
  void link(node_id n, node_id producer);
  /// Marks the nodes a read of `target`'s value needs; true if the read serializes the body
  /// (see wait_value).
  bool mark_ancestors(node_id target);
  [[noreturn]] void deliver();

  const plan* plan_ = nullptr;  // null for a staged run
  const graph* graph_ = nullptr;
  std::span<const void* const> args_;
  std::span<op_counters* const> counters_;
  op_table* ops_ = nullptr;

  // Tables. A plan run sizes them once; a staged run grows them as nodes are appended.
  grow_array<node_layout> own_info_;  // staged runs: appended by the owner
  grow_array<node_state> nodes_;
  grow_array<const void*> inputs_;                // input addresses, per node from first_input
  grow_array<std::atomic<std::uint32_t>> queue_;  // node + 1; 0 = not yet written
  grow_array<edge> edges_;                        // staged runs
  std::vector<void*> addr_;                       // owner: each value's address
  std::deque<async_slot> async_slots_;
  // A deque: the threads that run nodes reach a batch through its members' pointers while the
  // owner adds batches; they never index the deque.
  std::deque<batch> batches_;
  std::vector<batch*> open_batches_;                // staged runs, owner only
  std::vector<chunk> storage_;                      // result storage
  std::size_t chunk_index_ = 0, storage_used_ = 0;  // owner: where the next result goes
  std::uint32_t inputs_used_ = 0, edges_used_ = 0;  // owner, staged runs
  std::uint32_t count_ = 0;                         // nodes in the table
  std::atomic<std::uint32_t> queue_capacity_{0};    // release: cells usable by poppers

  // Shared by the threads that run nodes; each on its own cache line.
  alignas(64) std::atomic<std::uint32_t> head_{0};
  alignas(64) std::atomic<std::uint32_t> tail_{0};
  alignas(64) std::atomic<std::uint32_t> remaining_{0};  // seq_cst: pairs with owner_
  std::atomic<std::uint32_t> in_flight_{0}, peak_in_flight_{0};
  alignas(64) std::atomic<std::uint32_t> first_error_{no_id};
  std::atomic<std::uint32_t> abandon_below_{0};  // staged: nodes below it not final are abandoned
  std::mutex error_mutex_;  // guards error_, and writes of first_error_ and abandon_below_
  std::exception_ptr error_;
  alignas(64) run_waiter owner_;
  std::atomic<node_id> awaited_{no_id};  // seq_cst: the node whose end wakes the owner
  std::atomic<bool> offered_{false};
  alignas(64) std::atomic<std::uint8_t> stopped_{not_stopped};  // seq_cst (see stop())
  std::atomic<node_id> stop_point_{no_id};  // the first node not done when the call stopped

  // Bounded calls (a deadline or a stop token), and early ends.
  struct stop_relay {
    run* r;
    void operator()() const noexcept { r->stop(stop_requested); }
  };
  bool bounded_ = false;
  bool detachable_ = false;  // the arguments are the run's own copy
  call_limits limits_;       // the call's
  call_limits inherited_;    // what a jitted call made inside one of its ops inherits
  std::stop_source call_stop_{std::nostopstate};  // requested when the call stops
  std::optional<std::stop_callback<stop_relay>> on_stop_;
  std::uint64_t deadline_timer_ = 0;
  std::vector<node_id> stoppable_;        // under error_mutex_: nodes given a stop source
  std::unique_ptr<std::byte[]> arg_buf_;  // the arguments' copy
  std::size_t arg_cap_ = 0;
  const arg_copier* arg_held_ = nullptr;  // the copier whose copy is at arg_at_
  void* arg_at_ = nullptr;
  std::vector<const void*> arg_ptrs_;
  std::vector<std::shared_ptr<const void>> kept_;  // abandoned: what its nodes may still use
  std::vector<waiting_node> waiting_;              // under error_mutex_
  std::atomic<std::uint64_t> order_base_{0};
  std::uint32_t cells_ = 0;    // ready-queue cells of the nodes in the table
  bool has_timeouts_ = false;  // a plan run whose ops have timeouts: attempts may be left behind
  bool has_limited_roots_ = false;  // a plan run with roots of ops with a concurrency bound
  bool has_policies_ = false;       // a plan run with an op with a policy, or a batch op
  bool all_plain_ = false;          // a plan run whose nodes are all plain (no async op, no limit)
  bool trivial_results_ = false;    // a plan run whose results need no destructor call
  bool in_order_ = false;           // this call runs in order (run_in_order), decided by reset()
  std::atomic<std::uint32_t> published_{0};  // nodes in the table (release), for stop()
  /// Attempts that timed out while their op still runs: the run cannot be reused before they
  /// return.
  alignas(64) std::atomic<std::uint32_t> stragglers_{0};

 public:
  run* reap_next_ = nullptr;  // the reaper's list (reaper.cpp)

  // Owner only.
  std::uint32_t read_mark_ = 0;
  std::uint32_t read_from_ = 0;  // nodes recorded before the last read
  std::vector<node_id> mark_stack_;
  std::uint32_t settled_prefix_ = 0;  // every node below it is final
  std::uint32_t deepest_ = 0;
  std::uint64_t syncs_ = 0;
  std::uint64_t t0_ = 0;  // ticks at the start of the call
  run_times times_;
};

}  // namespace xcs::detail
