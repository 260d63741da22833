// SPDX-License-Identifier: MIT
// The live run of a staged call.
#include "live_run.hpp"

#include <algorithm>
#include <new>
#include <thread>
#include <utility>

#include "blocking_lane.hpp"
#include "clock.hpp"
#include "monitor.hpp"
#include "xcs/detail/op_profile.hpp"
#include "xcs/detail/op_table.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {
namespace {

/// Below this much ready work (ns), waking a sleeping worker costs more than it saves.
constexpr std::uint64_t kWakeNs = 4'000;
/// A blocking-lane run shorter than this says the op does not really block.
constexpr std::int64_t kShortNs = 200'000;

}  // namespace

live_run::live_run(const graph& g, std::span<const void* const> args) : g_(g), args_(args) {}

live_run::~live_run() {
  (void)drain();  // normally done already; never leave a node running on freed state
  for (node_rec& r : nodes_) {
    if (r.st == state::constructed) r.k->destroy(r.out);
    if (r.out) ::operator delete (r.out, std::align_val_t{r.k->align});
  }
}

// ---- the owner's side: values -------------------------------------------------------------

void live_run::catch_up_values() {
  const auto values = g_.values();
  for (std::size_t v = addr_.size(); v < values.size(); ++v) {
    const detail::value& val = values[v];
    const void* a = nullptr;
    switch (val.kind) {
      case value_kind::argument:
        a = args_[val.position()];
        break;
      case value_kind::element:
        // An element of an argument, or of an op's result that a read has already waited for.
        a = val.element(addr_[val.parent], val.element_index());
        break;
      case value_kind::constant:
        a = g_.constant(val.constant_slot());
        break;
      case value_kind::result:
        break;  // set by append()
    }
    addr_.push_back(a);
  }
}

const void* live_run::address_of(value_id v) {
  catch_up_values();
  return addr_[v];
}

node_id live_run::producer(value_id v) const { return g_.producer(g_.root(v)); }

void live_run::append(node_id n) {
  catch_up_values();
  const node& nd = g_.nodes()[n];
  node_rec r;
  r.k = nd.kernel;
  r.fn = nd.fn;
  r.op = nd.op.get();
  if (nd.kernel->start) r.async = std::make_unique<async_slot>();
  const auto ins = g_.inputs(nd);
  r.input_count = static_cast<std::uint32_t>(ins.size());
  r.inputs.reset(new const void*[std::max<std::size_t>(ins.size(), 1)]);
  for (std::size_t i = 0; i < ins.size(); ++i) {
    r.inputs[i] = addr_[ins[i]];
    node_id p = producer(ins[i]);
    if (p != no_id && std::find(r.preds.begin(), r.preds.end(), p) == r.preds.end()) {
      r.preds.push_back(p);
    }
  }
  if (nd.kernel->size > 0) {
    r.out = ::operator new (nd.kernel->size, std::align_val_t{nd.kernel->align});
    addr_[nd.result] = r.out;
  }
  std::unique_lock lock(mutex_);
  nodes_.push_back(std::move(r));
  node_rec& rec = nodes_.back();
  ++remaining_;
  for (node_id p : rec.preds) {
    node_rec& pr = nodes_[p];
    if (!final(pr.st)) {
      pr.succs.push_back(n);
      ++rec.join;
    } else if (pr.st != state::constructed && pr.st != state::ran) {
      rec.bad_input = true;
    }
  }
  if (rec.join == 0) make_ready(lock, n);
}

// ---- scheduling (mutex_ held) -------------------------------------------------------------

void live_run::make_ready(std::unique_lock<std::mutex>& lock, node_id n) {
  nodes_[n].st = state::ready;
  ready_.push_back(n);
  ready_count_.fetch_add(1, std::memory_order_seq_cst);
  if (owner_waiting_) owner_cv_.notify_one();
  share(lock);
}

void live_run::share(std::unique_lock<std::mutex>&) {
  // The pool stays lazy: a run with nothing to do at the same time (one ready node, nothing
  // else running) is left to its owner. Once there is, or the pool runs anyway, ready work
  // worth a wake goes to the workers.
  pool* workers = pool::started();
  if (!workers && ready_.size() + running_ < 2) return;
  std::uint64_t queued = 0;
  for (node_id n : ready_) {
    const op_profile* op = nodes_[n].op;
    std::uint32_t est = op ? op->est_ns.load(std::memory_order_relaxed) : 100;
    queued += est == 0 ? kWakeNs : est;
    if (queued >= kWakeNs) break;
  }
  if (queued < kWakeNs) return;
  if (!workers) {
    try {
      workers = &pool::instance();
    } catch (...) {
      return;  // no memory or threads for a pool: the owner runs the whole graph itself
    }
  }
  if (!offered_) {
    try {
      workers->offer(*this);
      offered_ = true;
    } catch (...) {
      return;
    }
  }
  workers->wake();
}

node_id live_run::pop(pick which) {
  for (auto it = ready_.begin(); it != ready_.end(); ++it) {
    node_id n = *it;
    node_rec& r = nodes_[n];
    if (which == pick::marked && r.mark != mark_) continue;
    if (which == pick::cheap && r.op && !r.async) continue;
    ready_.erase(it);
    ready_count_.fetch_sub(1, std::memory_order_seq_cst);
    r.st = state::running;
    ++running_;
    return n;
  }
  return no_id;
}

void live_run::mark_ancestors(node_id target) {
  ++mark_;
  std::vector<node_id> stack{target};
  while (!stack.empty()) {
    node_id n = stack.back();
    stack.pop_back();
    node_rec& r = nodes_[n];
    if (r.mark == mark_ || final(r.st)) continue;
    r.mark = mark_;
    for (node_id p : r.preds) stack.push_back(p);
  }
}

bool live_run::settled_before(node_id limit) const {
  for (node_id n = 0; n < limit && n < nodes_.size(); ++n) {
    if (!final(nodes_[n].st)) return false;
  }
  return true;
}

// ---- running a node -----------------------------------------------------------------------

void live_run::take_turn(node_id n) noexcept {
  node_rec* r;
  bool skip;
  {
    std::lock_guard lock(mutex_);
    r = &nodes_[n];
    // The direct call would never reach a node after the first thrower, nor one whose
    // inputs were not computed.
    skip = n > first_error_ || r->cancelled || r->bad_input;
  }
  concurrency_limit* limit = r->op ? r->op->limit.get() : nullptr;
  if (skip) {
    if (r->has_slot) limit->release();
    complete(n, state::skipped);
    return;
  }
  if (limit && !r->has_slot) {
    // Once parked, the node may be handed back by another thread at any time: count that
    // thread as a helper from now on.
    helpers_inside.fetch_add(1, std::memory_order_relaxed);
    if (!limit->acquire_or_park(*this, n)) return;
    helpers_inside.fetch_sub(1, std::memory_order_relaxed);
  }
  if (r->async) {
    start_async(n, *r);  // holds its slot, if any, until its completion
    return;
  }
  auto turn = [this, n, r, limit] {
    std::int64_t cpu0 = thread_cpu_ns();
    state outcome = execute(n);
    if (r->op && r->op->observed_blocking.load(std::memory_order_relaxed) && on_blocking_lane()) {
      // Learned, not hinted: if this instance was short or mostly computed, the op was
      // marked by mistake (say, its thread was preempted), so it goes back to the workers.
      std::int64_t cpu = thread_cpu_ns() - cpu0;
      auto wall = static_cast<std::int64_t>(ticks_to_ns(r->ticks));
      if (!r->op->blocking_hint && (wall < kShortNs || 2 * cpu > wall)) {
        r->op->observed_blocking.store(false, std::memory_order_relaxed);
      }
    }
    if (limit) limit->release();
    complete(n, outcome);
  };
  if (r->op && r->op->blocking() && !on_blocking_lane()) {
    helpers_inside.fetch_add(1, std::memory_order_relaxed);
    try {
      run_blocking([this, turn] {
        turn();
        helpers_inside.fetch_sub(1, std::memory_order_release);  // last touch of the run
      });
      return;
    } catch (...) {
      helpers_inside.fetch_sub(1, std::memory_order_relaxed);  // no thread for the lane: run here
    }
  }
  turn();
}

live_run::state live_run::execute(node_id n) noexcept {
  node_rec* r;
  {
    std::lock_guard lock(mutex_);
    r = &nodes_[n];
  }
  op_watch watch(r->op);
  state outcome = r->out ? state::constructed : state::ran;
  std::uint64_t t0 = ticks();
  try {
    r->k->invoke(r->fn, r->inputs.get(), r->input_count, r->out);
  } catch (...) {
    r->error = std::current_exception();
    outcome = state::threw;
  }
  r->ticks = std::max<std::uint64_t>(ticks() - t0, 1);
  if (r->op) r->op->learn(ticks_to_ns(r->ticks));
  return outcome;
}

void live_run::start_async(node_id n, node_rec& r) noexcept {
  async_slot& s = *r.async;
  s.prepare(*this, r.op, r.out, n, ticks());
  // The completion may come from any thread: it counts as a helper until it has settled.
  helpers_inside.fetch_add(1, std::memory_order_relaxed);
  r.k->start(r.fn, r.inputs.get(), s);
  r.op->learn_start(ticks_to_ns(ticks() - s.t0));  // before arriving: s may settle after
  if (!s.arrive()) return;  // settle() completes it, on the completing thread
  helpers_inside.fetch_sub(
      1, std::memory_order_relaxed);  // the completion's arrival was its last touch
  conclude(n, r, s);
}

void live_run::settle(async_slot& s) noexcept {
  node_rec* r;
  {
    std::lock_guard lock(mutex_);
    r = &nodes_[s.node];
  }
  conclude(s.node, *r, s);
  helpers_inside.fetch_sub(1, std::memory_order_release);  // last touch of the run
}

void live_run::conclude(node_id n, node_rec& r, async_slot& s) noexcept {
  r.ticks = std::max<std::uint64_t>(ticks() - s.t0, 1);  // start to completion
  state outcome = r.out ? state::constructed : state::ran;
  if (s.error()) {
    if (s.has_value) r.k->destroy(r.out);  // the function threw after completing
    r.error = s.error();
    s.start_error = nullptr;
    s.done_error = nullptr;
    outcome = state::threw;
  }
  if (concurrency_limit* limit = r.op->limit.get()) limit->release();
  complete(n, outcome);
}

void live_run::complete(node_id n, state outcome) noexcept {
  std::unique_lock lock(mutex_);
  node_rec& r = nodes_[n];
  r.st = outcome;
  if (outcome == state::threw && !r.cancelled && n < first_error_) first_error_ = n;
  bool ok = outcome == state::constructed || outcome == state::ran;
  --running_;
  --remaining_;
  for (node_id s : r.succs) {
    node_rec& sr = nodes_[s];
    if (!ok) sr.bad_input = true;
    if (--sr.join == 0) make_ready(lock, s);
  }
  if (owner_waiting_) owner_cv_.notify_one();
}

void live_run::slot_granted(std::uint32_t n) noexcept {
  {
    std::unique_lock lock(mutex_);
    node_rec& r = nodes_[n];
    r.has_slot = true;
    --running_;
    make_ready(lock, n);
  }
  helpers_inside.fetch_sub(1, std::memory_order_release);  // taken when the node parked
}

// ---- the pool's side ----------------------------------------------------------------------

bool live_run::has_work() const noexcept {
  return ready_count_.load(std::memory_order_seq_cst) > 0;
}

void live_run::help() noexcept {
  for (;;) {
    node_id n;
    {
      std::lock_guard lock(mutex_);
      n = pop(pick::any);
    }
    if (n == no_id) return;
    take_turn(n);
  }
}

// ---- the owner's waits --------------------------------------------------------------------

template <class Done>
void live_run::owner_wait(bool any, Done done) {
  std::unique_lock lock(mutex_);
  while (!done()) {
    node_id n = pop(any ? pick::any : pick::marked);
    // Before waiting, start what costs next to nothing to start: async ops in flight while
    // the owner waits, and the operators that feed them.
    if (n == no_id && !any) n = pop(pick::cheap);
    if (n != no_id) {
      lock.unlock();
      take_turn(n);
      lock.lock();
      continue;
    }
    // What the owner needs runs elsewhere (a worker, the lane, a parked slot): wait for a
    // node to finish. A parked owner holds no core, so the monitor may add a worker.
    park_watch parked;
    owner_waiting_ = true;
    owner_cv_.wait(lock);
    owner_waiting_ = false;
  }
}

const void* live_run::wait_value(value_id v) {
  node_id p = producer(v);
  if (p == no_id) return address_of(v);
  {
    std::unique_lock lock(mutex_);
    if (!final(nodes_[p].st)) {
      ++syncs_;
      mark_ancestors(p);
    }
  }
  owner_wait(false, [&] { return final(nodes_[p].st); });
  std::unique_lock lock(mutex_);
  state st = nodes_[p].st;
  if (st == state::constructed) {
    lock.unlock();
    return address_of(v);
  }
  lock.unlock();
  // The value cannot be computed. The direct call would have thrown at the first thrower in
  // program order, which may be a node still running before the one seen: wait for those.
  owner_wait(true, [&] { return first_error_ == no_id || settled_before(first_error_); });
  lock.lock();
  deliver(lock);
}

void live_run::deliver(std::unique_lock<std::mutex>& lock) {
  if (first_error_ == no_id) {
    throw error(
        "xcs: the body reads a value computed from an op's result that an exception the body "
        "caught left uncomputed");
  }
  node_id t = first_error_;
  std::exception_ptr e = std::exchange(nodes_[t].error, nullptr);
  // The body may catch it. The direct call would not have run the ops recorded after the
  // thrower (they sit between the throw and the catch): abandon them and their errors.
  for (node_id k = t + 1; k < nodes_.size(); ++k) nodes_[k].cancelled = true;
  first_error_ = no_id;
  lock.unlock();
  std::rethrow_exception(e);
}

std::exception_ptr live_run::drain() noexcept {
  owner_wait(true, [&] { return remaining_ == 0; });
  if (offered_) {
    pool::instance().retract(*this);
    offered_ = false;
  } else {
    while (helpers_inside.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }
  std::lock_guard lock(mutex_);
  return first_error_ == no_id ? nullptr : nodes_[first_error_].error;
}

void* live_run::value(value_id v) { return const_cast<void*>(address_of(v)); }

std::uint64_t live_run::op_ns() const noexcept {
  std::lock_guard lock(mutex_);
  std::uint64_t t = 0;
  for (const node_rec& r : nodes_) {
    if (r.st != state::skipped) t += r.ticks;
  }
  return ticks_to_ns(t);
}

void live_run::account(op_table& ops) const {
  const auto nodes = g_.nodes();
  op_counters* cur = nullptr;
  const op_profile* cur_op = nullptr;
  const double ns_per = ns_per_tick();
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    const node_rec& r = nodes_[i];
    if (!r.op || r.st == state::skipped || r.st == state::pending) continue;
    if (r.op != cur_op) {
      cur = &ops.get(nodes[i].op);
      cur_op = r.op;
    }
    auto d = static_cast<std::uint64_t>(static_cast<double>(r.ticks) * ns_per);
    cur->calls.fetch_add(1, std::memory_order_relaxed);
    if (r.st == state::threw) cur->errors.fetch_add(1, std::memory_order_relaxed);
    cur->total_ns.fetch_add(d, std::memory_order_relaxed);
    std::uint64_t m = cur->max_ns.load(std::memory_order_relaxed);
    while (d > m && !cur->max_ns.compare_exchange_weak(m, d, std::memory_order_relaxed)) {
    }
  }
}

}  // namespace xcs::detail
