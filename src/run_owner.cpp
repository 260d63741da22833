// SPDX-License-Identifier: MIT
// The owner's side of a run: its waits (a plan's end; a staged read and a staged call's drain
// wait the same way), the end of a call and the error it ends with, and stops (a deadline, a
// stop token, an early end). The node lifecycle is in run.cpp.
#include <iterator>
#include <utility>

#include "run.hpp"

namespace xcs::detail {

// ---- the owner's side ---------------------------------------------------------------------

bool run::error_settled() noexcept {
  const std::uint32_t f = first_error_.load(std::memory_order_seq_cst);
  if (f == no_id) return false;  // no error: nothing to walk
  while (settled_prefix_ < f &&
         is_final(nodes_[settled_prefix_].outcome.load(std::memory_order_acquire))) {
    ++settled_prefix_;
  }
  return settled_prefix_ >= f;
}

bool run::waited_for(wait_for what, node_id n) noexcept {
  if (what == wait_for::all_nodes) return remaining_.load(std::memory_order_seq_cst) == 0;
  if (stopped_.load(std::memory_order_seq_cst) != not_stopped) return true;
  switch (what) {
    case wait_for::node:
      // Or, failing fast, once an error before it is settled: the direct call threw there.
      return is_final(nodes_[n].outcome.load(std::memory_order_acquire)) ||
             (first_error_.load(std::memory_order_seq_cst) < n && error_settled());
    case wait_for::first_error_settled:
      return first_error_.load(std::memory_order_seq_cst) == no_id || error_settled();
    case wait_for::end:
      return remaining_.load(std::memory_order_seq_cst) == 0 || error_settled();
    case wait_for::all_nodes:
      break;
  }
  return true;
}

void run::owner_wait(chain_policy policy, wait_for what, node_id n) noexcept {
  // A wait never waits on a batch not sent: the calls recorded so far go now.
  if (!open_batches_.empty()) close_batches();
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
    // A wait that an error decides (fail fast) waits for the first unsettled node once
    // there is one; record_error() and stop() wake the owner too.
    const node_id error_seen = first_error_.load(std::memory_order_seq_cst);
    node_id target = n;
    if (what == wait_for::first_error_settled || (what == wait_for::end && error_seen != no_id) ||
        (what == wait_for::node && error_seen < n)) {
      target = settled_prefix_;
    } else if (what == wait_for::end) {
      target = no_id;
    }
    awaited_.store(target, std::memory_order_seq_cst);
    owner_.park([&] {
      // The seq_cst loads order the checks after the parked flag (see finish()).
      const bool all_done = remaining_.load(std::memory_order_seq_cst) == 0;
      if (has_work() || all_done) return false;
      if (what == wait_for::all_nodes) return true;
      if (stopped_.load(std::memory_order_seq_cst) != not_stopped ||
          first_error_.load(std::memory_order_seq_cst) != error_seen) {
        return false;
      }
      return target == no_id || !is_final(nodes_[target].outcome.load(std::memory_order_acquire));
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
  if (in_order_) {
    run_in_order();
  } else {
    run_shared();
  }
  if (std::exception_ptr e = end_call()) std::rethrow_exception(e);
}

void run::run_shared() {
  const chain_policy policy = bounded_ ? chain_policy::no_ops : chain_policy::any;
  const auto roots = plan_->roots();
  // Roots of ops with a concurrency bound take their permits here, in program order, before
  // any worker can: op #0 of a bounded fan-out starts in the first group, so that the direct
  // call's first failure is found first. A root that finds none parks (permit_granted queues
  // it), and is not queued here.
  node_id first = no_id;
  std::uint64_t queued_ns = 0;
  std::uint32_t queued = 0;
  for (node_id r : roots) {
    if (has_limited_roots_) {
      const op_runtime* op = info(r).op;
      // (A rate-limited or cached op's root takes its tokens or its cache hit first.)
      if (op && op->limit && !(op->policy && (op->policy->bucket || op->policy->cache))) {
        helpers_inside.fetch_add(1, std::memory_order_relaxed);
        if (!op->limit->acquire_or_park(*this, r)) continue;
        helpers_inside.fetch_sub(1, std::memory_order_relaxed);
        nodes_[r].holds_permit = true;
      }
    }
    if (first == no_id) {
      first = r;
      continue;
    }
    push(r);
    queued_ns += estimate(r);
    ++queued;
  }
  if (queued) share(queued_ns + (first == no_id ? 0 : estimate(first)), wake::if_worth);
  if (first != no_id) run_chain(first, policy);
  owner_wait(policy, wait_for::end, no_id);
}

std::exception_ptr run::end_call() noexcept {
  disarm_limits();
  if (remaining_.load(std::memory_order_seq_cst) != 0) {
    // An early end: nothing more starts, and what runs is asked to stop. Only a bounded call
    // leaves ops behind, and only with its own copy of the arguments: the user asked for a
    // deadline or a stop, and an op stuck in user code must not hold the call. An unbounded
    // call (fail fast) waits for the ops it asked to stop, as the direct call never returns
    // with work of its own still running: its ops may use what the caller frees next.
    stop(ended);
    if (!bounded_ || !detachable_) owner_wait(chain_policy::any, wait_for::all_nodes, no_id);
  }
  // An abandoned run leaves the pool later, from the reaper: a worker may be stuck in an op.
  if (!unfinished()) leave_pool();
  account();
  return end_error();
}

bool run::op_error_wins() noexcept {
  if (!error_settled()) return false;
  const std::uint8_t why = stopped_.load(std::memory_order_acquire);
  return (why != deadline_passed && why != stop_requested) ||
         first_error_.load(std::memory_order_seq_cst) < stop_point_.load(std::memory_order_relaxed);
}

std::exception_ptr run::end_error() noexcept {
  // The common end, without the lock: a call that did not stop had every node finished
  // (end_call), and a node records its error before it finishes.
  if (stopped_.load(std::memory_order_acquire) == not_stopped &&
      first_error_.load(std::memory_order_seq_cst) == no_id) {
    return nullptr;
  }
  // An op's exception that the direct call would have reached wins over the stop.
  if (op_error_wins()) {
    std::lock_guard lock(error_mutex_);
    return std::exchange(error_, nullptr);
  }
  try {
    switch (stopped_.load(std::memory_order_acquire)) {
      case deadline_passed:
        throw_deadline_exceeded("the call");
      case stop_requested:
        throw_cancelled("the call");
      default:
        break;
    }
  } catch (...) {
    return std::current_exception();
  }
  std::lock_guard lock(error_mutex_);
  return std::exchange(error_, nullptr);
}

// ---- stops --------------------------------------------------------------------------------

void run::arm_stop(node_id n) noexcept {
  node_state& s = nodes_[n];
  std::lock_guard lock(error_mutex_);
  try {
    s.stop = std::stop_source();
    stoppable_.push_back(n);
  } catch (...) {
    s.stop = std::stop_source(std::nostopstate);  // no memory: the instance gets no token
    return;
  }
  // A node that starts while the stop of the call or of its place is being decided: its
  // token is requested already (no callback can be registered on it yet).
  if (stopped_.load(std::memory_order_relaxed) != not_stopped ||
      n > first_error_.load(std::memory_order_relaxed)) {
    s.stop.request_stop();
  }
}

void run::request_stops(node_id from) noexcept {
  // The requests run the ops' stop callbacks, which may complete an op (and so take
  // error_mutex_): they are made outside the lock, on copies of the sources.
  std::stop_source some[16];
  std::size_t at = 0;
  for (;;) {
    std::size_t got = 0;
    {
      std::lock_guard lock(error_mutex_);
      for (; at < stoppable_.size() && got < std::size(some); ++at) {
        node_id n = stoppable_[at];
        if (n >= from) some[got++] = nodes_[n].stop;
      }
    }
    for (std::size_t i = 0; i < got; ++i) some[i].request_stop();
    if (got < std::size(some)) return;
  }
}

void run::stop(stop_kind why) noexcept {
  if (stopped_.load(std::memory_order_acquire) != not_stopped) return;
  // Where the call stopped: its first node not yet done. An op's exception before it is one
  // the direct call would have thrown before the stop; one after it may come of the stop.
  const std::uint32_t known = published_.load(std::memory_order_acquire);
  node_id point = 0;
  while (point < known && is_final(nodes_[point].outcome.load(std::memory_order_acquire))) ++point;
  stop_point_.store(point, std::memory_order_relaxed);
  std::uint8_t none = not_stopped;
  if (!stopped_.compare_exchange_strong(none, why, std::memory_order_seq_cst)) return;
  request_stops(0);
  end_waits();
  // The jitted calls made inside its ops stop too: at the deadline by their own timers (they
  // inherited it, and throw deadline_exceeded), otherwise through the inherited token.
  if (why != deadline_passed && call_stop_.stop_possible()) call_stop_.request_stop();
  owner_.wake_if_parked();  // after the seq_cst exchange (see run_waiter)
}

}  // namespace xcs::detail
