// SPDX-License-Identifier: MIT
// The run loop: dependency counting over a frame of per-call state.
#include "frame.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <thread>

#include "blocking_lane.hpp"
#include "clock.hpp"
#include "monitor.hpp"
#include "xcs/detail/op_profile.hpp"

namespace xcs::detail {
namespace {

/// Below this much queued work (ns), waking a sleeping thread (~2-5 µs for the waker, more
/// for the wakee) costs more than running the work here.
constexpr std::uint64_t kWakeNs = 4'000;
/// How long a helper watches an empty ready queue of a run that still has nodes running.
constexpr int kLingerSpins = 256;

inline void cpu_relax() noexcept {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

/// A blocking-lane run shorter than this says the op does not really block.
constexpr std::int64_t kShortNs = 200'000;
/// An op not yet measured is assumed to be worth a wake.
constexpr std::uint64_t kUnknownNs = ~std::uint64_t{0} >> 2;
/// Operators and packs are not measured: they are taken to be this cheap.
constexpr std::uint64_t kOperatorNs = 100;

enum node_state : std::uint8_t {
  pending = 0,
  constructed = 1,  // ran; its result is in storage
  threw = 2,
  skipped = 3,   // not started: an earlier node (in program order) threw
  ran = 4,       // ran; void result
  has_slot = 5,  // pending, and already holds a slot of its op's concurrency limit
};

}  // namespace

void frame::help() noexcept {
  for (node_id n = pop(); n != no_id; n = pop_or_linger()) {
    run_chain(n);
    if (pool::surplus_should_leave()) {
      // Cheap work this thread queued was left to it alone: hand it on before leaving.
      if (has_work()) shared_work(kUnknownNs, true);
      break;
    }
  }
}

void frame::slot_granted(std::uint32_t n) noexcept {
  state_[n] = has_slot;
  push(n);
  shared_work(kUnknownNs, true);
  helpers_inside.fetch_sub(1, std::memory_order_release);  // taken when the node parked
}

std::uint64_t frame::estimate(node_id n) const noexcept {
  const op_profile* op = p_.nodes_[n].op;
  if (!op) return kOperatorNs;
  std::uint32_t e = op->est_ns.load(std::memory_order_relaxed);
  return e == 0 ? kUnknownNs : e;
}

frame::frame(const plan& p)
    : p_(p),
      n_(static_cast<std::uint32_t>(p.nodes_.size())),
      queue_size_(2 * n_),
      join_(new std::atomic<std::uint32_t>[n_]),
      queue_(new std::atomic<std::int32_t>[queue_size_]),
      state_(new std::uint8_t[n_]),
      dur_(new std::uint64_t[n_]),
      async_(p.has_async_ ? new async_slot[n_] : nullptr),
      in_ptrs_(p.in_values_.size()),
      call_ptrs_(p.values_.size()) {
  for (std::uint32_t i = 0; i < queue_size_; ++i) queue_[i].store(-1, std::memory_order_relaxed);
  for (const auto& ni : p.nodes_) {
    if (ni.kernel->align > storage_align_) storage_align_ = ni.kernel->align;
  }
  storage_ = static_cast<std::byte*>(::operator new (std::max<std::size_t>(p.storage_bytes_, 1),
                                                     std::align_val_t{storage_align_}));
  for (std::size_t i = 0; i < in_ptrs_.size(); ++i) {
    const auto& loc = p.values_[p.in_values_[i]];
    if (loc.kind == value_kind::constant) {
      in_ptrs_[i] = p.graph_->constant(loc.where);
    } else if (loc.kind == value_kind::result) {
      in_ptrs_[i] = storage_ + loc.where;
    }
  }
}

frame::~frame() { ::operator delete (storage_, std::align_val_t{storage_align_}); }

std::size_t frame::bytes(const plan& p) noexcept {
  const std::size_t n = p.nodes_.size();
  return sizeof(frame) +
         n * (sizeof(std::atomic<std::uint32_t>) + sizeof(std::uint8_t) + sizeof(std::uint64_t)) +
         2 * n * sizeof(std::atomic<std::int32_t>) + (p.has_async_ ? n * sizeof(async_slot) : 0) +
         p.in_values_.size() * sizeof(const void*) + p.values_.size() * sizeof(const void*) +
         p.storage_bytes_;
}

void frame::start(std::span<const void* const> args, std::span<op_counters* const> counters) {
  counters_ = counters;
  for (std::uint32_t i = 0; i < n_; ++i)
    join_[i].store(p_.nodes_[i].join, std::memory_order_relaxed);
  // Only the slots the last run wrote need clearing.
  std::uint32_t used = std::min(tail_.load(std::memory_order_relaxed), queue_size_);
  for (std::uint32_t i = 0; i < used; ++i) queue_[i].store(-1, std::memory_order_relaxed);
  std::memset(state_.get(), pending, n_);
  head_.store(0, std::memory_order_relaxed);
  tail_.store(0, std::memory_order_relaxed);
  remaining_.store(n_, std::memory_order_relaxed);
  first_error_.store(no_id, std::memory_order_relaxed);
  error_ = nullptr;
  offered_.store(false, std::memory_order_relaxed);
  op_ns_ = 0;
  for (value_id v : p_.call_values_) {
    const auto& loc = p_.values_[v];
    if (loc.kind == value_kind::argument) {
      call_ptrs_[v] = args[loc.where];
    } else {
      call_ptrs_[v] = p_.graph_->values()[v].element(call_ptrs_[loc.where], loc.element_index);
    }
  }
  for (std::uint32_t slot : p_.call_inputs_) in_ptrs_[slot] = call_ptrs_[p_.in_values_[slot]];
}

node_id frame::pop() noexcept {
  std::uint32_t h = head_.load(std::memory_order_acquire);
  while (h < queue_size_) {
    std::int32_t v = queue_[h].load(std::memory_order_seq_cst);
    if (v < 0) return no_id;
    if (head_.compare_exchange_weak(h, h + 1, std::memory_order_acq_rel)) {
      return static_cast<node_id>(v);
    }
  }
  return no_id;
}

node_id frame::pop_or_linger() noexcept {
  node_id n = pop();
  for (int i = 0; n == no_id && i < kLingerSpins; ++i) {
    if (remaining_.load(std::memory_order_relaxed) == 0) break;
    cpu_relax();
    n = pop();
  }
  return n;
}

void frame::execute(node_id n) noexcept {
  const auto& ni = p_.nodes_[n];
  op_watch watch(ni.op);
  void* out = ni.storage == no_id ? nullptr : storage_ + ni.storage;
  std::uint64_t t0 = ticks();
  try {
    ni.kernel->invoke(ni.fn, in_ptrs_.data() + ni.first_input, ni.input_count, out);
    state_[n] = out ? constructed : ran;
  } catch (...) {
    state_[n] = threw;
    record_error(n, std::current_exception());
  }
  dur_[n] = std::max<std::uint64_t>(ticks() - t0, 1);
}

void frame::record_error(node_id n, std::exception_ptr e) noexcept {
  // Node ids are program order: the lowest thrower's exception is the direct call's.
  std::lock_guard lock(error_mutex_);
  if (n < first_error_.load(std::memory_order_relaxed)) {
    error_ = std::move(e);
    first_error_.store(n, std::memory_order_release);
  }
}

node_id frame::start_async(node_id n) noexcept {
  const auto& ni = p_.nodes_[n];
  async_slot& s = async_[n];
  s.prepare(*this, ni.op, ni.storage == no_id ? nullptr : storage_ + ni.storage, n, ticks());
  // The completion may come from any thread: it counts as a helper until it has settled.
  helpers_inside.fetch_add(1, std::memory_order_relaxed);
  ni.kernel->start(ni.fn, in_ptrs_.data() + ni.first_input, s);
  ni.op->learn_start(ticks_to_ns(ticks() - s.t0));  // before arriving: s may settle after
  if (!s.arrive()) return pop();  // settle() finishes it, on the completing thread
  // Completed (or failed, or dropped) before the start returned: on as after a plain op. The
  // completion's arrival was its last touch of the frame.
  helpers_inside.fetch_sub(1, std::memory_order_relaxed);
  conclude(n, s);
  node_id next = release(n, true);
  finish_one();
  return next;
}

void frame::conclude(node_id n, async_slot& s) noexcept {
  const auto& ni = p_.nodes_[n];
  dur_[n] = std::max<std::uint64_t>(ticks() - s.t0, 1);  // start to completion
  if (s.error()) {
    if (s.has_value) ni.kernel->destroy(s.out);  // the function threw after completing
    state_[n] = threw;
    record_error(n, s.error());
    s.start_error = nullptr;  // a pooled frame keeps no exception alive
    s.done_error = nullptr;
  } else {
    state_[n] = s.out ? constructed : ran;
  }
  if (concurrency_limit* limit = ni.op->limit.get()) limit->release();
}

void frame::settle(async_slot& s) noexcept {
  const node_id n = s.node;
  conclude(n, s);
  // Dependents go to the queue, never run here: this is the user's thread (an event loop, a
  // timer), which may hold locks the ops would need. The owner or a worker takes them.
  node_id next = release(n, true);
  if (next != no_id) {
    push(next);
    shared_work(estimate(next), false);
    owner_.wake_if_parked();  // after push()'s seq_cst store (see run_waiter)
  }
  finish_one();
  helpers_inside.fetch_sub(1, std::memory_order_release);  // last touch of the frame
}

void frame::run_chain(node_id n) noexcept {
  while (n != no_id) {
    op_profile* op = p_.nodes_[n].op;
    concurrency_limit* limit = op ? op->limit.get() : nullptr;
    if (n > first_error_.load(std::memory_order_acquire)) {
      // A node earlier in program order threw: the direct call would never reach this one.
      if (state_[n] == has_slot) limit->release();
      state_[n] = skipped;
      dur_[n] = 0;
    } else {
      if (limit && state_[n] != has_slot) {
        // Once parked, the node may be handed back by another thread at any time: count
        // that thread as a helper from now on.
        helpers_inside.fetch_add(1, std::memory_order_relaxed);
        if (!limit->acquire_or_park(*this, n)) {
          n = pop();
          continue;
        }
        helpers_inside.fetch_sub(1, std::memory_order_relaxed);
      }
      if (p_.nodes_[n].kernel->start) {
        n = start_async(n);  // holds its slot, if any, until its completion
        continue;
      }
      if (is_blocking(n) && !on_blocking_lane()) {
        offload(n, limit);
        n = pop();
        continue;
      }
      execute(n);
      if (limit) limit->release();
    }
    node_id next = release(n, true);
    finish_one();
    n = next;
  }
}

node_id frame::release(node_id n, bool keep) noexcept {
  const auto& ni = p_.nodes_[n];
  node_id next = no_id;
  std::uint64_t queued_ns = 0;
  std::uint32_t pushed = 0;
  for (std::uint32_t i = 0; i < ni.successor_count; ++i) {
    node_id s = p_.successors_[ni.first_successor + i];
    if (join_[s].fetch_sub(1, std::memory_order_acq_rel) != 1) continue;
    if (keep && next == no_id) {
      next = s;
      continue;
    }
    push(s);
    ++pushed;
    queued_ns += estimate(s);
  }
  if (pushed) {
    // What waits in the queue is more than what was just pushed: in a wavefront or a tree
    // each step queues little, but the queue grows. Count its depth at the pushed nodes'
    // average, and the work this thread turns to next, which delays all of it.
    std::uint32_t depth =
        tail_.load(std::memory_order_relaxed) - head_.load(std::memory_order_relaxed);
    if (depth > pushed) queued_ns += (depth - pushed) * (queued_ns / pushed);
    if (next != no_id) queued_ns += estimate(next);
    shared_work(queued_ns, !keep);
  }
  return next;
}

void frame::shared_work(std::uint64_t queued_ns, bool always) noexcept {
  bool worth = always || queued_ns >= kWakeNs;
  pool* started = pool::started();
  if (!worth && !started) return;  // cheap work: never start the pool for it
  if (!started) {
    try {
      started = &pool::instance();
    } catch (...) {
      return;  // no memory or threads for a pool: the owner runs the whole graph itself
    }
  }
  pool& s = *started;
  if (!offered_.load(std::memory_order_relaxed)) {
    offered_.store(true, std::memory_order_relaxed);
    try {
      s.offer(*this);
    } catch (...) {
      // Could not list the run (no memory for the lock?): the owner still drains it.
    }
  }
  if (!worth) return;
  s.wake();
  owner_.wake_if_parked();  // after push()'s seq_cst store (see run_waiter)
}

void frame::finish_one() noexcept {
  if (remaining_.fetch_sub(1, std::memory_order_seq_cst) == 1) owner_.wake_if_parked();
}

void frame::offload(node_id n, concurrency_limit* limit) noexcept {
  // The node's whole turn: run (or skip) it, free its slot, release its successors.
  auto turn = [this, n, limit] {
    if (n > first_error_.load(std::memory_order_acquire)) {
      state_[n] = skipped;
      dur_[n] = 0;
    } else {
      std::int64_t cpu0 = thread_cpu_ns();
      execute(n);
      std::int64_t cpu = thread_cpu_ns() - cpu0;
      // Learned, not hinted: if this instance was short or mostly computed, the op was
      // marked by mistake (say, its thread was preempted), so it goes back to the workers.
      op_profile* op = p_.nodes_[n].op;
      auto wall = static_cast<std::int64_t>(ticks_to_ns(dur_[n]));
      if (!op->blocking_hint && (wall < kShortNs || 2 * cpu > wall)) {
        op->observed_blocking.store(false, std::memory_order_relaxed);
      }
    }
    if (limit) limit->release();
    release(n, false);
    finish_one();
  };
  helpers_inside.fetch_add(1, std::memory_order_relaxed);
  try {
    run_blocking([this, turn] {
      turn();
      helpers_inside.fetch_sub(1, std::memory_order_release);  // last touch of the frame
    });
  } catch (...) {
    // No thread or memory for the lane: take the turn here.
    helpers_inside.fetch_sub(1, std::memory_order_relaxed);
    turn();
  }
}

void frame::run_to_end() {
  const auto& roots = p_.roots_;
  std::uint64_t queued_ns = 0;
  for (std::size_t i = 1; i < roots.size(); ++i) {
    push(roots[i]);
    queued_ns += estimate(roots[i]);
  }
  if (roots.size() > 1) shared_work(queued_ns + estimate(roots[0]), false);
  if (!roots.empty()) run_chain(roots[0]);
  for (;;) {
    for (node_id n = pop(); n != no_id; n = pop()) run_chain(n);
    if (remaining_.load(std::memory_order_seq_cst) == 0) break;
    owner_.park([this] { return !has_work() && remaining_.load(std::memory_order_seq_cst) != 0; });
  }
  if (offered_.load(std::memory_order_relaxed)) {
    pool::instance().retract(*this);
  } else {
    while (helpers_inside.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }
  account();
  if (error_) {
    std::exception_ptr e = std::exchange(error_, nullptr);
    std::rethrow_exception(e);
  }
}

void frame::account() noexcept {
  // One atomic add per run of nodes of the same op.
  op_counters* cur = nullptr;
  std::uint64_t calls = 0, errors = 0, total = 0, longest = 0;
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
  for (std::uint32_t i = 0; i < n_; ++i) {
    if (state_[i] == pending || state_[i] == skipped) continue;
    auto d = static_cast<std::uint64_t>(static_cast<double>(dur_[i]) * ns_per);
    op_ns_ += d;
    op_profile* op = p_.nodes_[i].op;
    if (op) op->learn(d);
    op_counters* c = i < counters_.size() ? counters_[i] : nullptr;
    if (!c) continue;
    if (c != cur) {
      flush();
      cur = c;
      calls = errors = total = longest = 0;
    }
    ++calls;
    errors += state_[i] == threw;
    total += d;
    longest = std::max<std::uint64_t>(longest, d);
  }
  flush();
}

void frame::destroy_results() noexcept {
  for (std::uint32_t i = 0; i < n_; ++i) {
    if (state_[i] == constructed) p_.nodes_[i].kernel->destroy(storage_ + p_.nodes_[i].storage);
  }
}

void* frame::value(value_id v) const noexcept {
  const auto& loc = p_.values_[v];
  switch (loc.kind) {
    case value_kind::argument:
    case value_kind::element:
      return const_cast<void*>(call_ptrs_[v]);
    case value_kind::constant:
      return const_cast<void*>(p_.graph_->constant(loc.where));
    case value_kind::result:
      return storage_ + loc.where;
  }
  return nullptr;
}

}  // namespace xcs::detail
