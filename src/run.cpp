// SPDX-License-Identifier: MIT
// The run engine: the node lifecycle, the ready queue, waking, and the owner's waits (a plan's
// end, a staged read, a staged call's drain). Per-call state is in run_state.cpp, the staged
// side in run_staged.cpp.
#include "run.hpp"

#include <algorithm>
#include <thread>
#include <utility>

#include "blocking_lane.hpp"
#include "clock.hpp"
#include "monitor.hpp"

namespace xcs::detail {
namespace {

/// Below this much queued work (ns), waking a sleeping thread (~2-5 µs for the waker, more
/// for the wakee) costs more than running the work here. An op not yet measured is assumed
/// to be worth one wake.
constexpr std::uint64_t kWakeNs = 4'000;
/// Operators and packs are not measured: they are taken to be this cheap.
constexpr std::uint64_t kOperatorNs = 100;
/// An op that computes at least this long (or is not yet measured) has its thread CPU time
/// measured, so that stats().speedup does not count time it spent descheduled.
constexpr std::uint64_t kMeasureCpuNs = 50'000;
/// A blocking-lane run shorter than this says the op does not really block.
constexpr std::int64_t kShortNs = 200'000;
/// How long a helper watches an empty ready queue of a run that still has nodes running.
constexpr int kLingerSpins = 256;

/// An operator, or an op with no policy and no stop token outside a bounded call: nothing to
/// set around it, and one attempt (run::execute_plain).
inline bool plain(const node_layout& ni, bool bounded) noexcept {
  return !ni.op || (!ni.op->policy && !bounded && !ni.kernel->wants_stop);
}

/// One call of an op on this thread, watched by the monitor and timed from construction to
/// took(); its thread CPU time is measured too when the op is long, not yet measured, or on
/// the blocking lane (else cpu() is 0).
class timed_call {
 public:
  explicit timed_call(op_runtime* op) noexcept
      : watch_(op),
        measure_cpu_(needs_cpu(op->est_ns.load(std::memory_order_relaxed))),
        cpu0_(measure_cpu_ ? thread_cpu_ns() : 0),
        t0_(ticks()) {}
  std::uint64_t took() const noexcept { return std::max<std::uint64_t>(ticks() - t0_, 1); }
  std::uint64_t cpu() const noexcept {
    if (!measure_cpu_) return 0;
    return static_cast<std::uint64_t>(std::max<std::int64_t>(thread_cpu_ns() - cpu0_, 1));
  }

 private:
  static bool needs_cpu(std::uint32_t est) noexcept {
    return est == 0 || est >= kMeasureCpuNs || on_blocking_lane();
  }
  op_watch watch_;
  bool measure_cpu_;
  std::int64_t cpu0_;
  std::uint64_t t0_;
};

/// What a node of `op` (null: an operator or a pack) is expected to cost, in ns.
inline std::uint64_t estimate_of(const op_runtime* op) noexcept {
  if (!op) return kOperatorNs;
  std::uint32_t e = op->est_ns.load(std::memory_order_relaxed);
  return e == 0 ? kWakeNs : e;
}

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

run::edge* run::closed() noexcept {
  static edge mark{no_id, nullptr};
  return &mark;
}

// ---- the ready queue ----------------------------------------------------------------------

bool run::has_work() const noexcept {
  std::uint32_t h = head_.load(std::memory_order_seq_cst);
  return h < queue_capacity_.load(std::memory_order_acquire) &&
         queue_[h].load(std::memory_order_seq_cst) != 0;
}

void run::push(node_id n) noexcept {
  // acq_rel: a pusher of cell t follows every earlier pusher, so it sees the cells that the
  // owner made for the nodes they pushed (see grow_array).
  std::uint32_t t = tail_.fetch_add(1, std::memory_order_acq_rel);
  queue_[t].store(n + 1, std::memory_order_seq_cst);
}

node_id run::pop() noexcept {
  std::uint32_t h = head_.load(std::memory_order_acquire);
  while (h < queue_capacity_.load(std::memory_order_acquire)) {
    std::uint32_t v = queue_[h].load(std::memory_order_seq_cst);
    if (v == 0) return no_id;
    if (head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel)) return v - 1;
  }
  return no_id;
}

node_id run::pop_or_linger() noexcept {
  node_id n = pop();
  for (int i = 0; n == no_id && i < kLingerSpins; ++i) {
    if (remaining_.load(std::memory_order_relaxed) == 0) break;
    cpu_relax();
    n = pop();
  }
  return n;
}

std::uint64_t run::estimate(node_id n) const noexcept { return estimate_of(info(n).op); }

bool run::holds_thread_long(node_id n) const noexcept {
  const op_runtime* op = info(n).op;
  return op && !op->async && !op->blocking() && estimate(n) >= kWakeNs;
}

void run::share(std::uint64_t queued_ns, wake when) noexcept {
  const bool worth = when == wake::always || queued_ns >= kWakeNs;
  pool* workers = pool::started();
  // The pool stays lazy: cheap work, or a run with nothing to do at the same time (a staged
  // chain: one node in flight), never starts it.
  if (!workers && worth && remaining_.load(std::memory_order_relaxed) >= 2) {
    try {
      workers = &pool::instance();
    } catch (...) {
      // No memory or threads for a pool: the owner runs the whole graph itself.
    }
  }
  // Work not worth a wake is not offered either: the thread that queued it, or the owner,
  // runs it, and a run never offered leaves without touching the pool's lock.
  if (!worth) return;
  if (workers && !offered_.load(std::memory_order_relaxed)) {
    try {
      workers->offer(*this);
      offered_.store(true, std::memory_order_relaxed);
    } catch (...) {
      // Could not list the run (no memory for the lock?): the owner still drains it.
    }
  }
  if (workers) workers->wake();
  owner_.wake_if_parked();  // after push()'s seq_cst store (see run_waiter)
}

// ---- the node lifecycle -------------------------------------------------------------------

bool run::must_skip(node_id n) const noexcept {
  // The direct call would never reach a node after the first thrower, nor one whose inputs
  // were not computed, nor one the body abandoned by catching an earlier node's exception.
  // Nor, once the call has stopped (a deadline, a cancellation, an early end), any node.
  return n > first_error_.load(std::memory_order_acquire) ||
         n < abandon_below_.load(std::memory_order_acquire) ||
         nodes_[n].bad_input.load(std::memory_order_acquire) ||
         stopped_.load(std::memory_order_acquire) != not_stopped;
}

void run::skip(node_id n) noexcept {
  nodes_[n].outcome.store(skipped, std::memory_order_release);
  if (nodes_[n].in_batch) leave_batch(n);  // its batch goes without it
}

// Inline: the step of every node's turn (run_chain), and of a turn on the lane (offload).
inline run::attempt_end run::run_attempt(node_id n, const node_layout& ni, node_state& s) noexcept {
  if (!plain(ni, bounded_)) return execute(n);
  execute_plain(n, ni, s);
  return attempt_end::done;
}

void run::run_chain(node_id n, chain_policy policy) noexcept {
  while (n != no_id) {
    node_state& s = nodes_[n];
    const node_layout& ni = info(n);
    op_runtime* op = ni.op;
    concurrency_limit* limit = op ? op->limit.get() : nullptr;
    if (must_skip(n)) {
      if (s.holds_permit) limit->release();
      skip(n);
    } else if (const gate g = op && op->policy ? pass_policy(n) : gate::open; g == gate::waits) {
      return;  // queued again once its tokens or its key's result come
    } else if (g == gate::open) {
      if (limit && !s.holds_permit) {
        // Once parked, the node may be handed back by another thread at any time: count
        // that thread as a helper from now on.
        helpers_inside.fetch_add(1, std::memory_order_relaxed);
        if (!limit->acquire_or_park(*this, n)) return;
        helpers_inside.fetch_sub(1, std::memory_order_relaxed);
      }
      if (!plan_ && !s.counted_in_flight) note_started(s);
      // Attempts are counted for retries; a node of an op without a policy makes one.
      if (op && op->policy) ++s.attempts;
      if (ni.kernel->wants_stop) arm_stop(n);
      if (ni.kernel->start) {
        // Holds its permit, if any, until its completion; a batch op's call joins its batch.
        n = s.in_batch ? join_batch(n) : start_async(n);
        continue;
      }
      if (runs_elsewhere(n, policy)) {
        offload(n, limit);
        return;
      }
      const attempt_end end = run_attempt(n, ni, s);
      if (limit) limit->release();
      if (end != attempt_end::done) return;  // a retry is scheduled, or it timed out
    }
    // Done here: it ran, was skipped, or settled at its policy's gate (a cache hit, a failure).
    node_id next = release(n, successor_use::keep_one);
    finish(n);
    n = next;
  }
}

bool run::too_cheap_to_share() const noexcept {
  // The rule share() applies to what is queued, applied to the whole call before it starts
  // (an op not yet measured is estimated at a wake's worth, so it alone decides).
  std::uint64_t ns = 0;
  for (const node_layout& ni : plan_->nodes()) {
    if (ni.op && ni.op->blocking()) return false;  // for the lane
    ns += estimate_of(ni.op);
    if (ns >= kWakeNs) return false;
  }
  return true;
}

void run::run_in_order() noexcept {
  // No node is offered to another thread, so none needs its successors released or its end
  // counted: the owner runs them as the direct call would, in program order (a topological
  // order), and reaches no node after the first exception (run_chain's skip rule: an earlier
  // node failed, so every later one is skipped).
  for (node_id n = 0; n < count_; ++n) {
    node_state& s = nodes_[n];
    if (first_error_.load(std::memory_order_relaxed) != no_id) {
      s.outcome.store(skipped, std::memory_order_relaxed);
    } else {
      execute_plain(n, info(n), s);
    }
  }
  remaining_.store(0, std::memory_order_relaxed);
}

run::gate run::pass_policy(node_id n) noexcept {
  node_state& s = nodes_[n];
  const op_policy& pol = *info(n).op->policy;
  if (pol.cache) {
    const cache_look cached = look_up(n);
    if (cached == cache_look::parked) return gate::waits;  // cache_filled() or cache_owned()
    // A hit (its result is a copy of the cached one) or a key that failed: nothing ran, and
    // it took no token, no permit and no attempt.
    if (cached != cache_look::miss) return gate::settled;
  }
  // Tokens first, then a permit: a node never holds a permit while it waits for tokens.
  if (!pol.bucket || s.holds_tokens) return gate::open;
  const token_step tokens = s.token_error ? token_step::failed : take_tokens(n);
  if (tokens == token_step::parked) return gate::waits;  // tokens_granted() queues it again
  if (tokens == token_step::taken) return gate::open;
  // A bad weight or a failed source: the node failed (recorded); nothing ran.
  s.outcome.store(threw, std::memory_order_release);
  return gate::settled;
}

bool run::runs_elsewhere(node_id n, chain_policy policy) const noexcept {
  const op_runtime* op = info(n).op;
  if (!op) return false;
  // The owner of a bounded call runs no op (it must be free to return at the deadline), and
  // an op with a timeout runs where it may be left behind: on the lane.
  if (policy == chain_policy::no_ops || (op->policy && op->policy->timeout_ns)) return true;
  // A blocking op goes to the lane; so does, while the owner waits for a read, an op that
  // would hold it long and that the read does not need.
  bool lane = op->blocking();
  if (policy == chain_policy::needed && nodes_[n].mark != read_mark_ && holds_thread_long(n)) {
    lane = true;
  }
  return lane && !on_blocking_lane();
}

void run::note_started(node_state& s) noexcept {
  s.counted_in_flight = true;
  std::uint32_t now = in_flight_.fetch_add(1, std::memory_order_relaxed) + 1;
  std::uint32_t peak = peak_in_flight_.load(std::memory_order_relaxed);
  while (now > peak &&
         !peak_in_flight_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void run::invoke_timed(const node_layout& ni, void* out, std::exception_ptr& error,
                       std::uint64_t& took, std::uint64_t& cpu) noexcept {
  timed_call timed(ni.op);
  try {
    ni.kernel->invoke(ni.fn, &inputs_[ni.first_input], ni.input_count, out);
  } catch (...) {
    error = std::current_exception();
  }
  took = timed.took();
  cpu = timed.cpu();
}

void run::execute_plain(node_id n, const node_layout& ni, node_state& s) noexcept {
  std::uint8_t o = s.out ? constructed : ran;
  if (!ni.op) {
    // Operators and packs: neither watched nor timed (they are taken to be cheap).
    try {
      ni.kernel->invoke(ni.fn, &inputs_[ni.first_input], ni.input_count, s.out);
    } catch (...) {
      o = threw;
      record_error(n, std::current_exception());
    }
    s.outcome.store(o, std::memory_order_release);
    return;
  }
  timed_call timed(ni.op);
  try {
    ni.kernel->invoke(ni.fn, &inputs_[ni.first_input], ni.input_count, s.out);
  } catch (...) {
    o = threw;
    record_error(n, std::current_exception());
  }
  s.ticks = timed.took();
  s.cpu_ns = timed.cpu();
  s.outcome.store(o, std::memory_order_release);
}

void run::record_error(node_id n, std::exception_ptr e) noexcept {
  // Node ids are program order: the lowest thrower's exception is the direct call's.
  {
    std::lock_guard lock(error_mutex_);
    if (n < abandon_below_.load(std::memory_order_relaxed)) return;  // the body moved past it
    if (n >= first_error_.load(std::memory_order_relaxed)) return;
    error_ = std::move(e);
    // seq_cst: pairs with the owner's park (see run_waiter), which this may end (fail fast).
    first_error_.store(n, std::memory_order_seq_cst);
  }
  // Fail fast: what comes after the thrower is not needed any more.
  request_stops(n + 1);
  owner_.wake_if_parked();
}

void run::offload(node_id n, concurrency_limit* limit) noexcept {
  // The node's whole turn on the lane: run (or skip) it, apply the misjudge rule, free its
  // permit, release its successors.
  auto turn = [this, n, limit] {
    node_state& s = nodes_[n];
    if (must_skip(n)) {
      skip(n);
    } else {
      const node_layout& ni = info(n);
      const attempt_end end = run_attempt(n, ni, s);
      if (end != attempt_end::done) {
        if (limit) limit->release();
        return;  // a retry is scheduled, or it timed out
      }
      // Learned, not hinted: if this instance was short or mostly computed, the op was
      // marked by mistake (say, its thread was preempted), so it goes back to the workers.
      op_runtime* op = ni.op;
      auto wall = static_cast<std::int64_t>(ticks_to_ns(s.ticks));
      auto cpu = static_cast<std::int64_t>(s.cpu_ns);
      if (op->observed_blocking.load(std::memory_order_relaxed) && !op->blocking_hint &&
          (wall < kShortNs || 2 * cpu > wall)) {
        op->observed_blocking.store(false, std::memory_order_relaxed);
      }
    }
    if (limit) limit->release();
    release(n, successor_use::queue_all);
    finish(n);
  };
  helpers_inside.fetch_add(1, std::memory_order_relaxed);
  try {
    run_blocking([this, turn] {
      turn();
      helpers_inside.fetch_sub(1, std::memory_order_release);  // last touch of the run
    });
  } catch (...) {
    // No thread or memory for the lane: take the turn here.
    helpers_inside.fetch_sub(1, std::memory_order_relaxed);
    turn();
  }
}

node_id run::release(node_id n, successor_use use) noexcept {
  const bool ok = succeeded(nodes_[n].outcome.load(std::memory_order_relaxed));
  node_id next = no_id;
  std::uint64_t queued_ns = 0;
  std::uint32_t pushed = 0;
  auto ready_one = [&](node_id to) {
    node_state& t = nodes_[to];
    if (!ok) t.bad_input.store(true, std::memory_order_relaxed);
    if (t.join.fetch_sub(1, std::memory_order_acq_rel) != 1) return;
    if (use == successor_use::keep_one && next == no_id) {
      next = to;
      return;
    }
    push(to);
    ++pushed;
    queued_ns += estimate(to);
  };
  if (plan_) {
    const node_layout& ni = plan_->nodes()[n];
    for (node_id to : plan_->successors().subspan(ni.first_successor, ni.successor_count)) {
      ready_one(to);
    }
  } else {
    // Closing the list: a node the owner appends from now on sees this one finished.
    for (edge* e = nodes_[n].successors.exchange(closed(), std::memory_order_acq_rel); e;
         e = e->next) {
      ready_one(e->to);
    }
  }
  if (pushed) {
    // What waits in the queue is more than what was just pushed: in a wavefront or a tree
    // each step queues little, but the queue grows. Count its depth at the pushed nodes'
    // average, and the work this thread turns to next, which delays all of it.
    std::uint32_t depth =
        tail_.load(std::memory_order_relaxed) - head_.load(std::memory_order_relaxed);
    if (depth > pushed) queued_ns += (depth - pushed) * (queued_ns / pushed);
    if (next != no_id) queued_ns += estimate(next);
    share(queued_ns, use == successor_use::queue_all ? wake::always : wake::if_worth);
  }
  return next;
}

void run::finish(node_id n) noexcept {
  // The owner of a cache key ends its flight before the run can end (its result is read).
  if (nodes_[n].cache && nodes_[n].cache->step == cache_step::owner) end_flight(n);
  if (!plan_ && nodes_[n].counted_in_flight) in_flight_.fetch_sub(1, std::memory_order_relaxed);
  // seq_cst: pairs with the owner's park (see run_waiter and owner_wait).
  if (remaining_.fetch_sub(1, std::memory_order_seq_cst) == 1 ||
      awaited_.load(std::memory_order_seq_cst) == n) {
    owner_.wake_if_parked();
  }
}

// ---- the pool's side ----------------------------------------------------------------------

void run::help() noexcept {
  for (node_id n = pop(); n != no_id; n = pop_or_linger()) {
    run_chain(n, chain_policy::any);
    if (pool::stand_in_should_leave()) {
      // Cheap work this thread queued was left to it alone: hand it on before leaving.
      if (has_work()) share(kWakeNs, wake::always);
      break;
    }
  }
}

void run::permit_granted(std::uint32_t n) noexcept {
  nodes_[n].holds_permit = true;
  push(n);
  share(kWakeNs, wake::always);
  helpers_inside.fetch_sub(1, std::memory_order_release);  // taken when the node parked
}

}  // namespace xcs::detail
