// SPDX-License-Identifier: MIT
// The run engine: the node lifecycle, the ready queue, waking, accounting, and the owner's
// waits (a plan's end, a staged read, a staged call's drain).
#include "run.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <thread>
#include <utility>

#include "blocking_lane.hpp"
#include "clock.hpp"
#include "monitor.hpp"
#include "xcs/detail/op_table.hpp"
#include "xcs/error.hpp"

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
/// A staged run's result storage comes in chunks of this size (a larger result gets its own).
constexpr std::size_t kChunkBytes = 4096;
/// A staged run keeps this many storage chunks from one call to the next.
constexpr std::size_t kKeptChunks = 4;
/// A node enters the ready queue at most this often: ready, and again with a permit.
constexpr std::uint32_t kQueueCellsPerNode = 2;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

enum outcome : std::uint8_t {
  pending = 0,
  constructed = 1,  // ran; its result is in storage
  ran = 2,          // ran; void result
  threw = 3,
  skipped = 4,  // not started: an earlier node threw, an input is missing, or abandoned
};

bool is_final(std::uint8_t o) noexcept { return o != pending; }
bool succeeded(std::uint8_t o) noexcept { return o == constructed || o == ran; }

}  // namespace

run::edge* run::closed() noexcept {
  static edge mark{no_id, nullptr};
  return &mark;
}

// ---- construction and reuse ---------------------------------------------------------------

run::run(const plan& p) : plan_(&p), graph_(&p.ir()) {
  const auto n = static_cast<std::uint32_t>(p.node_count());
  const auto inputs = static_cast<std::uint32_t>(p.input_values().size());
  nodes_.reset(n);
  nodes_.grow_to(n);
  inputs_.reset(inputs);
  inputs_.grow_to(inputs);
  queue_.reset(kQueueCellsPerNode * n);
  queue_.grow_to(kQueueCellsPerNode * n);
  queue_capacity_.store(kQueueCellsPerNode * n, std::memory_order_relaxed);
  count_ = n;
  std::byte* base = allocate_storage(p.storage_bytes(), p.storage_align());
  const auto layout = p.nodes();
  for (std::uint32_t i = 0; i < n; ++i) {
    node_state& s = nodes_[i];
    if (layout[i].storage != no_id) s.out = base + layout[i].storage;
    if (layout[i].kernel->start) s.async = &async_slots_.emplace_back();
  }
  const auto values = p.values();
  addr_.assign(values.size(), nullptr);
  for (std::size_t v = 0; v < values.size(); ++v) {
    if (values[v].kind == value_kind::constant) {
      addr_[v] = const_cast<void*>(graph_->constant(values[v].where));
    } else if (values[v].kind == value_kind::result) {
      addr_[v] = base + values[v].where;
    }
  }
  const auto in_values = p.input_values();
  for (std::uint32_t i = 0; i < inputs; ++i) inputs_[i] = addr_[in_values[i]];
}

run::run() {
  own_info_.reset(64);
  nodes_.reset(64);
  inputs_.reset(128);
  queue_.reset(kQueueCellsPerNode * 64);
  edges_.reset(128);
}

run::~run() { destroy_results(); }

std::size_t run::bytes(const plan& p) noexcept {
  const std::size_t n = p.node_count();
  return sizeof(run) + n * (sizeof(node_state) + kQueueCellsPerNode * sizeof(std::uint32_t)) +
         (p.has_async() ? n * sizeof(async_slot) : 0) +
         p.input_values().size() * sizeof(const void*) + p.values().size() * sizeof(void*) +
         p.storage_bytes();
}

std::size_t run_bytes(const plan& p) noexcept { return run::bytes(p); }

std::byte* run::allocate_storage(std::size_t size, std::size_t align) {
  auto chunk_of = [&](std::size_t bytes) {
    storage_.push_back({std::unique_ptr<std::byte[]>(new std::byte[bytes]), bytes});
    storage_used_ = 0;
  };
  auto fits = [&](const chunk& c) {
    auto at = reinterpret_cast<std::uintptr_t>(c.bytes.get()) + storage_used_;
    std::size_t pad = (align - at % align) % align;
    return storage_used_ + pad + size <= c.size;
  };
  if (storage_.empty() || chunk_index_ >= storage_.size()) {
    chunk_of(std::max(kChunkBytes, size + align));
    chunk_index_ = storage_.size() - 1;
  }
  while (!fits(storage_[chunk_index_])) {
    ++chunk_index_;
    storage_used_ = 0;
    if (chunk_index_ == storage_.size()) chunk_of(std::max(kChunkBytes, size + align));
  }
  chunk& c = storage_[chunk_index_];
  auto at = reinterpret_cast<std::uintptr_t>(c.bytes.get()) + storage_used_;
  std::size_t pad = (align - at % align) % align;
  std::byte* out = c.bytes.get() + storage_used_ + pad;
  storage_used_ += pad + size;
  return out;
}

void run::reset(const graph& g, std::span<const void* const> args,
                std::span<op_counters* const> counters, op_table* ops) {
  graph_ = &g;
  args_ = args;
  counters_ = counters;
  ops_ = ops;
  // Only the cells the last call wrote need clearing.
  std::uint32_t used = tail_.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < used; ++i) queue_[i].store(0, std::memory_order_relaxed);
  head_.store(0, std::memory_order_relaxed);
  tail_.store(0, std::memory_order_relaxed);
  first_error_.store(no_id, std::memory_order_relaxed);
  abandon_below_.store(0, std::memory_order_relaxed);
  in_flight_.store(0, std::memory_order_relaxed);
  peak_in_flight_.store(0, std::memory_order_relaxed);
  error_ = nullptr;
  offered_.store(false, std::memory_order_relaxed);
  syncs_ = 0;
  times_ = {};
  t0_ = ticks();
  if (plan_) {
    const auto layout = plan_->nodes();
    for (std::uint32_t i = 0; i < count_; ++i) {
      node_state& s = nodes_[i];
      s.join.store(layout[i].join, std::memory_order_relaxed);
      s.outcome.store(pending, std::memory_order_relaxed);
      s.bad_input.store(false, std::memory_order_relaxed);
      s.holds_permit = false;
      s.ticks = 0;
      s.cpu_ns = 0;
    }
    remaining_.store(count_, std::memory_order_relaxed);
    for (value_id v : plan_->call_values()) {
      const auto& loc = plan_->values()[v];
      addr_[v] =
          loc.kind == value_kind::argument
              ? const_cast<void*>(args[loc.where])
              : const_cast<void*>(g.values()[v].element(addr_[loc.where], loc.element_index));
    }
    const auto in_values = plan_->input_values();
    for (std::uint32_t slot : plan_->call_inputs()) inputs_[slot] = addr_[in_values[slot]];
    return;
  }
  count_ = 0;
  remaining_.store(0, std::memory_order_relaxed);
  queue_capacity_.store(0, std::memory_order_relaxed);
  inputs_used_ = 0;
  edges_used_ = 0;
  read_mark_ = 0;
  read_from_ = 0;
  settled_prefix_ = 0;
  deepest_ = 0;
  addr_.clear();
  async_slots_.clear();
  if (storage_.size() > kKeptChunks) storage_.resize(kKeptChunks);
  chunk_index_ = 0;
  storage_used_ = 0;
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
    if (pool::surplus_should_leave()) {
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

template <class Done>
void run::owner_wait(chain_policy policy, node_id awaited, Done done) {
  for (;;) {
    for (node_id n = pop(); n != no_id; n = pop()) {
      run_chain(n, policy);
      if (done()) return;
    }
    if (done()) return;
    // What the owner needs runs elsewhere (a worker, the lane, a parked node, an async
    // op): park. On a CPU worker the fiber is suspended; elsewhere the thread sleeps, and a
    // parked owner holds no core, so the monitor may add a worker.
    awaited_.store(awaited, std::memory_order_seq_cst);
    park_watch parked;
    owner_.park([&] {
      // The seq_cst load orders the check after the parked flag (see finish()).
      (void)remaining_.load(std::memory_order_seq_cst);
      return !has_work() && !done();
    });
    awaited_.store(no_id, std::memory_order_relaxed);
  }
}

void run::leave_pool() noexcept {
  if (offered_.load(std::memory_order_relaxed)) {
    pool::instance().retract(*this);
    offered_.store(false, std::memory_order_relaxed);
  } else {
    while (helpers_inside.load(std::memory_order_acquire) != 0) std::this_thread::yield();
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
  owner_wait(chain_policy::any, no_id,
             [this] { return remaining_.load(std::memory_order_seq_cst) == 0; });
  leave_pool();
  account();
  if (error_) {
    std::exception_ptr e = std::exchange(error_, nullptr);
    std::rethrow_exception(e);
  }
}

// ---- staged runs: appending ---------------------------------------------------------------

void run::catch_up_values() {
  const auto values = graph_->values();
  for (std::size_t v = addr_.size(); v < values.size(); ++v) {
    const detail::value& val = values[v];
    void* a = nullptr;
    switch (val.kind) {
      case value_kind::argument:
        a = const_cast<void*>(args_[val.position()]);
        break;
      case value_kind::element:
        // An element of an argument, or of an op's result that a read has already waited for.
        a = const_cast<void*>(val.element(addr_[val.parent], val.element_index()));
        break;
      case value_kind::constant:
        a = const_cast<void*>(graph_->constant(val.constant_slot()));
        break;
      case value_kind::result:
        break;  // set by append()
    }
    addr_.push_back(a);
  }
}

void run::append(node_id n) {
  catch_up_values();
  const node& nd = graph_->nodes()[n];
  const auto ins = graph_->inputs(nd);
  const auto in_count = static_cast<std::uint32_t>(ins.size());
  own_info_.grow_to(n + 1);
  nodes_.grow_to(n + 1);
  queue_.grow_to(kQueueCellsPerNode * (n + 1));
  std::uint32_t first = inputs_.contiguous_from(inputs_used_, in_count);
  inputs_.grow_to(first + in_count);
  for (std::uint32_t i = 0; i < in_count; ++i) inputs_[first + i] = addr_[ins[i]];
  inputs_used_ = first + in_count;
  own_info_[n] =
      node_layout{nd.kernel, nd.fn, nd.op ? &op_runtime::of(*nd.op) : nullptr, first, in_count};
  node_state& s = nodes_[n];
  s.join.store(1, std::memory_order_relaxed);  // held until every producer is linked
  s.outcome.store(pending, std::memory_order_relaxed);
  s.bad_input.store(false, std::memory_order_relaxed);
  s.holds_permit = false;
  s.counted_in_flight = false;
  s.mark = 0;
  s.linked_to = no_id;
  s.depth = 1;
  s.ticks = 0;
  s.cpu_ns = 0;
  s.successors.store(nullptr, std::memory_order_relaxed);
  s.out = nd.kernel->size ? allocate_storage(nd.kernel->size, nd.kernel->align) : nullptr;
  s.async = nd.kernel->start ? &async_slots_.emplace_back() : nullptr;
  if (nd.result != no_id) addr_[nd.result] = s.out;
  count_ = n + 1;
  remaining_.fetch_add(1, std::memory_order_seq_cst);
  // Release: a thread that pops one of the new cells sees the segments made for them.
  queue_capacity_.store(kQueueCellsPerNode * (n + 1), std::memory_order_release);
  for (value_id v : ins) {
    node_id p = graph_->producer(graph_->root(v));
    if (p != no_id) link(n, p);
  }
  deepest_ = std::max(deepest_, s.depth);
  if (s.join.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    push(n);
    share(estimate(n), wake::if_worth);
  }
}

void run::link(node_id n, node_id producer) {
  node_state& s = nodes_[n];
  node_state& p = nodes_[producer];
  if (p.linked_to == n) return;  // another input from the same producer
  p.linked_to = n;
  s.depth = std::max(s.depth, p.depth + 1);
  edges_.grow_to(edges_used_ + 1);
  edge& e = edges_[edges_used_];
  e.to = n;
  // The join count goes up first: the producer may finish the moment the edge is in.
  s.join.fetch_add(1, std::memory_order_relaxed);
  edge* head = p.successors.load(std::memory_order_acquire);
  do {
    if (head == closed()) {
      s.join.fetch_sub(1, std::memory_order_relaxed);
      if (!succeeded(p.outcome.load(std::memory_order_acquire))) {
        s.bad_input.store(true, std::memory_order_relaxed);
      }
      return;
    }
    e.next = head;
  } while (!p.successors.compare_exchange_weak(head, &e, std::memory_order_acq_rel,
                                               std::memory_order_acquire));
  ++edges_used_;
}

// ---- staged runs: reads -------------------------------------------------------------------

bool run::mark_ancestors(node_id target) {
  // Marks what the read needs (the non-final ancestors) and counts the ancestors recorded
  // since the last read: if they are all that was recorded, the body had nothing to overlap.
  ++read_mark_;
  std::uint32_t recent = 0;
  mark_stack_.clear();
  mark_stack_.push_back(target);
  while (!mark_stack_.empty()) {
    node_id n = mark_stack_.back();
    mark_stack_.pop_back();
    node_state& s = nodes_[n];
    if (s.mark == read_mark_) continue;
    if (n < read_from_ && is_final(s.outcome.load(std::memory_order_acquire))) continue;
    s.mark = read_mark_;
    recent += n >= read_from_;
    for (value_id v : graph_->inputs(graph_->nodes()[n])) {
      node_id p = graph_->producer(graph_->root(v));
      if (p != no_id) mark_stack_.push_back(p);
    }
  }
  return recent == count_ - read_from_;
}

const void* run::wait_value(value_id v, bool& serial) {
  catch_up_values();
  serial = false;
  node_id p = graph_->producer(graph_->root(v));
  if (p == no_id) return addr_[v];
  auto done = [&] { return is_final(nodes_[p].outcome.load(std::memory_order_acquire)); };
  if (!done()) {
    ++syncs_;
    serial = mark_ancestors(p);
    owner_wait(chain_policy::needed, p, done);
  }
  read_from_ = count_;
  if (nodes_[p].outcome.load(std::memory_order_acquire) == constructed) {
    catch_up_values();
    return addr_[v];
  }
  // The value cannot be computed. The direct call would have thrown at the first thrower in
  // program order, which may be a node still running before the one seen: wait for those.
  auto settled = [&] {
    while (settled_prefix_ < count_ &&
           is_final(nodes_[settled_prefix_].outcome.load(std::memory_order_acquire))) {
      ++settled_prefix_;
    }
    std::uint32_t f = first_error_.load(std::memory_order_acquire);
    return f == no_id || settled_prefix_ >= f;
  };
  while (!settled()) owner_wait(chain_policy::any, settled_prefix_, settled);
  deliver();
}

void run::deliver() {
  std::unique_lock lock(error_mutex_);
  if (first_error_.load(std::memory_order_relaxed) == no_id) {
    throw error(
        "xcs: the body reads a value computed from an op's result that an exception the body "
        "caught left uncomputed");
  }
  std::exception_ptr e = std::exchange(error_, nullptr);
  // The body may catch it. The direct call would not have run the ops recorded after the
  // thrower (they sit between the throw and the catch): abandon them and their errors.
  abandon_below_.store(count_, std::memory_order_release);
  first_error_.store(no_id, std::memory_order_release);
  lock.unlock();
  std::rethrow_exception(e);
}

std::exception_ptr run::drain() noexcept {
  owner_wait(chain_policy::any, no_id,
             [this] { return remaining_.load(std::memory_order_seq_cst) == 0; });
  leave_pool();
  account();
  std::lock_guard lock(error_mutex_);
  return first_error_.load(std::memory_order_relaxed) == no_id ? nullptr : error_;
}

// ---- after the run ------------------------------------------------------------------------

void* run::value(value_id v) noexcept {
  if (!plan_) catch_up_values();
  return addr_[v];
}

void run::account() noexcept {
  // One atomic add per run of nodes of the same op.
  op_counters* cur = nullptr;
  const op_runtime* cur_op = nullptr;
  std::uint64_t calls = 0, errors = 0, total = 0, longest = 0, work = 0;
  auto flush = [&] {
    if (!cur || calls == 0) return;
    cur->calls.fetch_add(calls, std::memory_order_relaxed);
    if (errors) cur->errors.fetch_add(errors, std::memory_order_relaxed);
    cur->total_ns.fetch_add(total, std::memory_order_relaxed);
    std::uint64_t m = cur->max_ns.load(std::memory_order_relaxed);
    while (longest > m &&
           !cur->max_ns.compare_exchange_weak(m, longest, std::memory_order_relaxed)) {
    }
  };
  const double ns_per = ns_per_tick();
  for (std::uint32_t i = 0; i < count_; ++i) {
    const node_state& s = nodes_[i];
    std::uint8_t o = s.outcome.load(std::memory_order_relaxed);
    if (o == pending || o == skipped) continue;
    auto d = static_cast<std::uint64_t>(static_cast<double>(s.ticks) * ns_per);
    op_runtime* op = info(i).op;
    // What the direct call would spend in the op: its CPU time if it computes (descheduled
    // time is not work), its wall time if it waits (blocking, async).
    bool computes = op && s.cpu_ns && !op->async && !op->blocking();
    work += computes ? std::min(d, s.cpu_ns) : d;
    if (!op) continue;
    op->learn(d);
    op_counters* c = nullptr;
    if (plan_) {
      c = i < counters_.size() ? counters_[i] : nullptr;
    } else if (ops_) {
      if (op == cur_op) {
        c = cur;
      } else {
        try {
          c = &ops_->get(graph_->nodes()[i].op);
        } catch (...) {
          c = nullptr;  // no memory for a new entry: the call goes uncounted
        }
      }
    }
    if (!c) continue;
    if (c != cur) {
      flush();
      cur = c;
      cur_op = op;
      calls = errors = total = longest = 0;
    }
    ++calls;
    errors += o == threw;
    total += d;
    longest = std::max<std::uint64_t>(longest, d);
  }
  flush();
  times_.op_ns = work;
  times_.wall_ns = ticks_to_ns(ticks() - t0_);
  times_.peak_in_flight = peak_in_flight_.load(std::memory_order_relaxed);
  times_.deepest = deepest_;
}

void run::destroy_results() noexcept {
  for (std::uint32_t i = 0; i < count_; ++i) {
    node_state& s = nodes_[i];
    if (s.outcome.load(std::memory_order_relaxed) == constructed) {
      info(i).kernel->destroy(s.out);
      s.outcome.store(ran, std::memory_order_relaxed);
    }
  }
}

}  // namespace xcs::detail
