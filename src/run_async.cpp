// SPDX-License-Identifier: MIT
// The run engine's async ops: a node's start, and its completion, which may come from any
// thread (async_sink). The node lifecycle is in run.cpp.
#include <algorithm>
#include <optional>

#include "clock.hpp"
#include "run.hpp"

namespace xcs::detail {

node_id run::start_async(node_id n) noexcept {
  const node_layout& ni = info(n);
  // An op with a timeout starts each attempt on a slot of its own (a late completion of an
  // attempt left behind must not touch the next one's).
  attempt* at = ni.op->policy && ni.op->policy->timeout_ns ? begin_attempt(n, true) : nullptr;
  async_slot& a = at ? attempt_slot(at) : *nodes_[n].async;
  a.prepare(*this, ni.op, at ? attempt_out(at) : nodes_[n].out, n, ticks());
  a.attempt = at;
  // The completion may come from any thread: it counts as a helper until it has settled.
  helpers_inside.fetch_add(1, std::memory_order_relaxed);
  {
    // The completion takes the instance's token (completion::stop_token()).
    std::optional<limits_scope> inherit;
    if (bounded_) inherit.emplace(&inherited_);
    std::stop_token token = nodes_[n].stop.get_token();
    instance_stop_scope instance(&token);
    ni.kernel->start(ni.fn, &inputs_[ni.first_input], a);
  }
  ni.op->learn_start(ticks_to_ns(ticks() - a.t0));  // before arriving: `a` may settle after
  if (!a.arrive()) return no_id;  // settle() finishes it, on the completing thread
  // Completed (or failed, or dropped) before the start returned: on as after a plain op. The
  // completion's arrival was its last touch of the run.
  helpers_inside.fetch_sub(1, std::memory_order_relaxed);
  if (conclude(n, a) != attempt_end::done) return no_id;
  node_id next = release(n, successor_use::keep_one);
  finish(n);
  return next;
}

run::attempt_end run::conclude(node_id n, async_slot& a) noexcept {
  const node_layout& ni = info(n);
  node_state& s = nodes_[n];
  auto* at = static_cast<attempt*>(a.attempt);
  concurrency_limit* limit = ni.op->limit.get();
  // Moved out, and the other cleared: a reused run keeps no exception alive.
  std::exception_ptr e = std::move(a.start_error ? a.start_error : a.done_error);
  if (a.done_error) a.done_error = nullptr;
  const bool has_value = a.has_value;
  const std::uint64_t took = std::max<std::uint64_t>(ticks() - a.t0, 1);  // start to completion
  if (at && !claim(at)) {
    discard(at, has_value);  // timed out: the node went on without it (`a` is gone)
    if (limit) limit->release();
    return attempt_end::lost;
  }
  if (e) {
    if (has_value) ni.kernel->destroy(a.out);  // the function threw after completing
  } else if (at && has_value) {
    try {
      ni.kernel->relocate(s.out, a.out);
    } catch (...) {
      e = std::current_exception();
    }
  }
  if (at) free_attempt(at);
  s.ticks = took;
  if (limit) limit->release();
  return conclude_attempt(n, std::move(e), s.out ? constructed : ran);
}

void run::settle(async_slot& a) noexcept {
  const node_id n = a.node;
  // Dependents go to the queue, never run here: this is the user's thread (an event loop, a
  // timer), which may hold locks the ops would need. The owner or a worker takes them.
  if (conclude(n, a) == attempt_end::done) {
    node_id next = release(n, successor_use::keep_one);
    if (next != no_id) {
      push(next);
      share(estimate(next), wake::if_worth);
      owner_.wake_if_parked();  // after push()'s seq_cst store (see run_waiter)
    }
    finish(n);
  }
  helpers_inside.fetch_sub(1, std::memory_order_release);  // last touch of the run
}

}  // namespace xcs::detail
