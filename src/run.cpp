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

const node_layout& run::info(node_id n) const noexcept {
  return plan_ ? plan_->nodes()[n] : own_info_[n];
}

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

std::uint64_t run::estimate(node_id n) const noexcept {
  const op_runtime* op = info(n).op;
  if (!op) return kOperatorNs;
  std::uint32_t e = op->est_ns.load(std::memory_order_relaxed);
  return e == 0 ? kWakeNs : e;
}

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
  return n > first_error_.load(std::memory_order_acquire) ||
         n < abandon_below_.load(std::memory_order_acquire) ||
         nodes_[n].bad_input.load(std::memory_order_acquire);
}

void run::run_chain(node_id n, chain_policy policy) noexcept {
  while (n != no_id) {
    node_state& s = nodes_[n];
    op_runtime* op = info(n).op;
    concurrency_limit* limit = op ? op->limit.get() : nullptr;
    if (must_skip(n)) {
      if (s.holds_permit) limit->release();
      s.outcome.store(skipped, std::memory_order_release);
    } else {
      if (limit && !s.holds_permit) {
        // Once parked, the node may be handed back by another thread at any time: count
        // that thread as a helper from now on.
        helpers_inside.fetch_add(1, std::memory_order_relaxed);
        if (!limit->acquire_or_park(*this, n)) return;
        helpers_inside.fetch_sub(1, std::memory_order_relaxed);
      }
      if (!plan_) note_started(s);
      if (info(n).kernel->start) {
        n = start_async(n);  // holds its permit, if any, until its completion
        continue;
      }
      // A blocking op goes to the lane; so does, while the owner waits for a read, an op
      // that would hold it long and that the read does not need.
      bool lane = op && op->blocking();
      if (policy == chain_policy::needed && s.mark != read_mark_ && holds_thread_long(n)) {
        lane = true;
      }
      if (lane && !on_blocking_lane()) {
        offload(n, limit);
        return;
      }
      execute(n);
      if (limit) limit->release();
    }
    node_id next = release(n, successor_use::keep_one);
    finish(n);
    n = next;
  }
}

void run::note_started(node_state& s) noexcept {
  s.counted_in_flight = true;
  std::uint32_t now = in_flight_.fetch_add(1, std::memory_order_relaxed) + 1;
  std::uint32_t peak = peak_in_flight_.load(std::memory_order_relaxed);
  while (now > peak &&
         !peak_in_flight_.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
  }
}

void run::execute(node_id n) noexcept {
  const node_layout& ni = info(n);
  node_state& s = nodes_[n];
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
  op_watch watch(ni.op);
  const std::uint32_t est = ni.op->est_ns.load(std::memory_order_relaxed);
  const bool measure_cpu = est == 0 || est >= kMeasureCpuNs || on_blocking_lane();
  const std::int64_t cpu0 = measure_cpu ? thread_cpu_ns() : 0;
  const std::uint64_t t0 = ticks();
  try {
    ni.kernel->invoke(ni.fn, &inputs_[ni.first_input], ni.input_count, s.out);
  } catch (...) {
    o = threw;
    record_error(n, std::current_exception());
  }
  s.ticks = std::max<std::uint64_t>(ticks() - t0, 1);
  s.cpu_ns = measure_cpu
                 ? static_cast<std::uint64_t>(std::max<std::int64_t>(thread_cpu_ns() - cpu0, 1))
                 : 0;
  s.outcome.store(o, std::memory_order_release);
}

void run::record_error(node_id n, std::exception_ptr e) noexcept {
  // Node ids are program order: the lowest thrower's exception is the direct call's.
  std::lock_guard lock(error_mutex_);
  if (n < abandon_below_.load(std::memory_order_relaxed)) return;  // the body moved past it
  if (n < first_error_.load(std::memory_order_relaxed)) {
    error_ = std::move(e);
    first_error_.store(n, std::memory_order_release);
  }
}

node_id run::start_async(node_id n) noexcept {
  const node_layout& ni = info(n);
  async_slot& a = *nodes_[n].async;
  a.prepare(*this, ni.op, nodes_[n].out, n, ticks());
  // The completion may come from any thread: it counts as a helper until it has settled.
  helpers_inside.fetch_add(1, std::memory_order_relaxed);
  ni.kernel->start(ni.fn, &inputs_[ni.first_input], a);
  ni.op->learn_start(ticks_to_ns(ticks() - a.t0));  // before arriving: `a` may settle after
  if (!a.arrive()) return no_id;  // settle() finishes it, on the completing thread
  // Completed (or failed, or dropped) before the start returned: on as after a plain op. The
  // completion's arrival was its last touch of the run.
  helpers_inside.fetch_sub(1, std::memory_order_relaxed);
  conclude(n, a);
  node_id next = release(n, successor_use::keep_one);
  finish(n);
  return next;
}

void run::conclude(node_id n, async_slot& a) noexcept {
  const node_layout& ni = info(n);
  node_state& s = nodes_[n];
  s.ticks = std::max<std::uint64_t>(ticks() - a.t0, 1);  // start to completion
  std::uint8_t o = s.out ? constructed : ran;
  if (a.error()) {
    if (a.has_value) ni.kernel->destroy(a.out);  // the function threw after completing
    o = threw;
    record_error(n, a.error());
    a.start_error = nullptr;  // a reused run keeps no exception alive
    a.done_error = nullptr;
  }
  s.outcome.store(o, std::memory_order_release);
  if (concurrency_limit* limit = ni.op->limit.get()) limit->release();
}

void run::settle(async_slot& a) noexcept {
  const node_id n = a.node;
  conclude(n, a);
  // Dependents go to the queue, never run here: this is the user's thread (an event loop, a
  // timer), which may hold locks the ops would need. The owner or a worker takes them.
  node_id next = release(n, successor_use::keep_one);
  if (next != no_id) {
    push(next);
    share(estimate(next), wake::if_worth);
    owner_.wake_if_parked();  // after push()'s seq_cst store (see run_waiter)
  }
  finish(n);
  helpers_inside.fetch_sub(1, std::memory_order_release);  // last touch of the run
}

void run::offload(node_id n, concurrency_limit* limit) noexcept {
  // The node's whole turn on the lane: run (or skip) it, apply the misjudge rule, free its
  // permit, release its successors.
  auto turn = [this, n, limit] {
    node_state& s = nodes_[n];
    if (must_skip(n)) {
      s.outcome.store(skipped, std::memory_order_release);
    } else {
      execute(n);
      // Learned, not hinted: if this instance was short or mostly computed, the op was
      // marked by mistake (say, its thread was preempted), so it goes back to the workers.
      op_runtime* op = info(n).op;
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

// ---- the owner's side ---------------------------------------------------------------------

bool run::waited_for(wait_for what, node_id n) noexcept {
  switch (what) {
    case wait_for::all_nodes:
      return remaining_.load(std::memory_order_seq_cst) == 0;
    case wait_for::node:
      return is_final(nodes_[n].outcome.load(std::memory_order_acquire));
    case wait_for::first_error_settled: {
      while (settled_prefix_ < count_ &&
             is_final(nodes_[settled_prefix_].outcome.load(std::memory_order_acquire))) {
        ++settled_prefix_;
      }
      std::uint32_t f = first_error_.load(std::memory_order_acquire);
      return f == no_id || settled_prefix_ >= f;
    }
  }
  return true;
}

void run::owner_wait(chain_policy policy, wait_for what, node_id n) noexcept {
  for (;;) {
    for (node_id ready = pop(); ready != no_id; ready = pop()) {
      run_chain(ready, policy);
      if (waited_for(what, n)) return;
    }
    if (waited_for(what, n)) return;
    // What the owner needs runs elsewhere (a worker, the lane, a parked node, an async
    // op): park, woken by the end of the node it waits for (the first unsettled one, when
    // it waits for those before an error) or of the last node. On a CPU worker the fiber is
    // suspended; elsewhere the thread sleeps, and a parked owner holds no core, so the
    // monitor may add a worker.
    const node_id target = what == wait_for::first_error_settled ? settled_prefix_ : n;
    awaited_.store(target, std::memory_order_seq_cst);
    owner_.park([&] {
      // The seq_cst load orders the check after the parked flag (see finish()).
      const bool all_done = remaining_.load(std::memory_order_seq_cst) == 0;
      if (has_work() || all_done) return false;
      return what == wait_for::all_nodes ||
             !is_final(nodes_[target].outcome.load(std::memory_order_acquire));
    });
    awaited_.store(no_id, std::memory_order_relaxed);
  }
}

void run::leave_pool() noexcept {
  if (offered_.load(std::memory_order_relaxed)) {
    pool::instance().retract(*this);
    offered_.store(false, std::memory_order_relaxed);
  } else {
    wait_for_helpers();
  }
}

void run::run_to_end() {
  const auto roots = plan_->roots();
  std::uint64_t queued_ns = 0;
  for (std::size_t i = 1; i < roots.size(); ++i) {
    push(roots[i]);
    queued_ns += estimate(roots[i]);
  }
  if (roots.size() > 1) share(queued_ns + estimate(roots[0]), wake::if_worth);
  if (!roots.empty()) run_chain(roots[0], chain_policy::any);
  owner_wait(chain_policy::any, wait_for::all_nodes, no_id);
  leave_pool();
  account();
  if (error_) {
    std::exception_ptr e = std::exchange(error_, nullptr);
    std::rethrow_exception(e);
  }
}

}  // namespace xcs::detail
