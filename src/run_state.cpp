// SPDX-License-Identifier: MIT
// The run engine's per-call state: its tables, their reuse, result storage and accounting (see
// run.hpp).
#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "clock.hpp"
#include "run.hpp"
#include "timer.hpp"
#include "xcs/detail/op_table.hpp"

namespace xcs::detail {
namespace {

/// A staged run's result storage comes in chunks of this size (a larger result gets its own).
constexpr std::size_t kChunkBytes = 4096;
/// A staged run keeps this many storage chunks from one call to the next.
constexpr std::size_t kKeptChunks = 4;

}  // namespace

// ---- construction and reuse ---------------------------------------------------------------

run::run(const plan& p) : plan_(&p), graph_(&p.ir()) {
  const auto n = static_cast<std::uint32_t>(p.node_count());
  const auto inputs = static_cast<std::uint32_t>(p.input_values().size());
  nodes_.reset(n);
  nodes_.grow_to(n);
  inputs_.reset(inputs);
  inputs_.grow_to(inputs);
  for (const node_layout& l : p.nodes()) {
    cells_ += queue_cells(l.op);
    if (l.op && l.op->policy && l.op->policy->timeout_ns) has_timeouts_ = true;
    if (l.op && l.op->policy) has_policies_ = true;
  }
  if (!p.batches().groups.empty()) has_policies_ = true;
  all_plain_ = !has_policies_ && std::none_of(p.nodes().begin(), p.nodes().end(), [](auto& l) {
    return l.kernel->start || l.kernel->wants_stop || (l.op && l.op->limit);
  });
  trivial_results_ = std::all_of(p.nodes().begin(), p.nodes().end(),
                                 [](auto& l) { return l.kernel->trivial_destroy; });
  for (node_id r : p.roots()) {
    if (p.nodes()[r].op && p.nodes()[r].op->limit) has_limited_roots_ = true;
  }
  queue_.reset(cells_);
  queue_.grow_to(cells_);
  queue_capacity_.store(cells_, std::memory_order_relaxed);
  count_ = n;
  published_.store(n, std::memory_order_relaxed);
  std::byte* base = allocate_storage(p.storage_bytes(), p.storage_align());
  const auto layout = p.nodes();
  for (std::uint32_t i = 0; i < n; ++i) {
    node_state& s = nodes_[i];
    if (layout[i].storage != no_id) s.out = base + layout[i].storage;
    if (layout[i].kernel->start) s.async = &async_slots_.emplace_back();
  }
  for (std::uint32_t g = 0; g < p.batches().groups.size(); ++g) {
    batch& b = batches_.emplace_back();
    b.op = p.batches().groups[g].op;
    b.group = g;
    for (node_id m : p.batches().members_of(p.batches().groups[g])) nodes_[m].in_batch = &b;
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

std::uint32_t run::queue_cells(const op_runtime* op) noexcept {
  if (!op || !op->policy) return kQueueCellsPerNode;
  return kQueueCellsPerNode + 3 * op->policy->max_attempts + 1 + (op->policy->cache ? 1 : 0);
}

std::size_t run::bytes(const plan& p) noexcept {
  const std::size_t n = p.node_count();
  std::size_t cells = 0;
  for (const node_layout& l : p.nodes()) cells += queue_cells(l.op);
  return sizeof(run) + n * sizeof(node_state) + cells * sizeof(std::uint32_t) +
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

void run::reset(const graph& g, std::span<const void* const> args, const arg_copier* copier,
                std::span<op_counters* const> counters, op_table* ops) {
  graph_ = &g;
  // A bounded call may leave ops behind: it reads its own copy of the arguments.
  const call_limits* limits = call_limits::current();
  bounded_ = limits && limits->bounded();
  // Its own copy when ops may be left behind: a bounded call's, or one that timed out.
  if (bounded_ || has_timeouts_ || !plan_ || arg_held_) {
    copy_args(args, bounded_ || has_timeouts_ || !plan_ ? copier : nullptr);
    args = args_;
  } else {
    args_ = args;  // the common case: no copy to make, none held
    detachable_ = false;
  }
  counters_ = counters;
  ops_ = ops;
  // Only the cells the last call wrote need clearing.
  std::uint32_t used = tail_.load(std::memory_order_relaxed);
  for (std::uint32_t i = 0; i < used; ++i) queue_[i].store(0, std::memory_order_relaxed);
  head_.store(0, std::memory_order_relaxed);
  tail_.store(0, std::memory_order_relaxed);
  first_error_.store(no_id, std::memory_order_relaxed);
  abandon_below_.store(0, std::memory_order_relaxed);
  stopped_.store(not_stopped, std::memory_order_relaxed);
  stop_point_.store(no_id, std::memory_order_relaxed);
  settled_prefix_ = 0;
  for (node_id n : stoppable_) nodes_[n].stop = std::stop_source(std::nostopstate);
  stoppable_.clear();
  waiting_.clear();
  order_base_.store(0, std::memory_order_relaxed);
  if (bounded_) arm_limits(*limits);  // may stop the call at once

  in_flight_.store(0, std::memory_order_relaxed);
  peak_in_flight_.store(0, std::memory_order_relaxed);
  error_ = nullptr;
  offered_.store(false, std::memory_order_relaxed);
  syncs_ = 0;
  times_ = {};
  t0_ = ticks();
  if (plan_) {
    in_order_ = all_plain_ && !bounded_ && too_cheap_to_share();
    reset_plan_nodes(g, args);
  } else {
    reset_staged_tables();
  }
}

void run::reset_plan_nodes(const graph& g, std::span<const void* const> args) noexcept {
  const auto layout = plan_->nodes();
  // A call in order sets every node's outcome as it goes, and reads no join count nor bad
  // input flag; whichever call next runs shared resets them here first.
  for (std::uint32_t i = 0; i < count_ && !in_order_; ++i) {
    node_state& s = nodes_[i];
    s.join.store(layout[i].join, std::memory_order_relaxed);
    s.outcome.store(pending, std::memory_order_relaxed);
    s.bad_input.store(false, std::memory_order_relaxed);
    s.holds_permit = false;
    // A node without a policy writes its times whenever it runs (account() reads them only
    // then), and none of the fields below.
    if (!has_policies_) continue;
    s.ticks = 0;
    s.cpu_ns = 0;
    s.holds_tokens = false;
    s.token_error = false;
    s.attempts = 0;
    s.timeouts = 0;
    s.rate_wait = 0;
    if (s.cache) s.cache->clear();
    s.sent_batch = false;
    s.sent_counts = {};
  }
  if (has_policies_) reset_batches();
  remaining_.store(count_, std::memory_order_relaxed);
  for (value_id v : plan_->call_values()) {
    const auto& loc = plan_->values()[v];
    addr_[v] = loc.kind == value_kind::argument
                   ? const_cast<void*>(args[loc.where])
                   : const_cast<void*>(g.values()[v].element(addr_[loc.where], loc.element_index));
  }
  const auto in_values = plan_->input_values();
  for (std::uint32_t slot : plan_->call_inputs()) inputs_[slot] = addr_[in_values[slot]];
}

void run::reset_staged_tables() noexcept {
  count_ = 0;
  cells_ = 0;
  published_.store(0, std::memory_order_relaxed);
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
  batches_.clear();
  open_batches_.clear();
  if (storage_.size() > kKeptChunks) storage_.resize(kKeptChunks);
  chunk_index_ = 0;
  storage_used_ = 0;
}

// ---- after the run ------------------------------------------------------------------------

void* run::value(value_id v) noexcept {
  if (!plan_) catch_up_values();
  return addr_[v];
}

namespace {

/// What one call's nodes of one op add to its counters, gathered so that they are added once.
struct op_tally {
  std::uint64_t calls = 0, errors = 0, total = 0, longest = 0, retries = 0, timeouts = 0,
                rate_wait = 0, hits = 0, misses = 0, batches = 0, deduplicated = 0;

  void add_to(op_counters& c, std::uint32_t slot) const noexcept {
    if (hits) c.cache_hits.fetch_add(hits, std::memory_order_relaxed);
    if (misses) c.cache_misses.fetch_add(misses, std::memory_order_relaxed);
    if (errors) c.errors.fetch_add(errors, std::memory_order_relaxed);
    if (batches) c.batches.fetch_add(batches, std::memory_order_relaxed);
    if (deduplicated) c.deduplicated.fetch_add(deduplicated, std::memory_order_relaxed);
    if (calls == 0) return;
    add_in_slot(c.slots[slot].calls, calls, slot);
    add_in_slot(c.slots[slot].total_ns, total, slot);
    if (retries) c.retries.fetch_add(retries, std::memory_order_relaxed);
    if (timeouts) c.timeouts.fetch_add(timeouts, std::memory_order_relaxed);
    if (rate_wait) c.rate_wait_ns.fetch_add(rate_wait, std::memory_order_relaxed);
    std::uint64_t m = c.max_ns.load(std::memory_order_relaxed);
    while (longest > m && !c.max_ns.compare_exchange_weak(m, longest, std::memory_order_relaxed)) {
    }
  }
};

/// The same for a plan whose ops have no policy and no batch: calls, errors and times only.
struct plain_tally {
  std::uint64_t calls = 0, errors = 0, total = 0, longest = 0;

  void add_to(op_counters& c, std::uint32_t slot) const noexcept {
    if (errors) c.errors.fetch_add(errors, std::memory_order_relaxed);
    add_in_slot(c.slots[slot].calls, calls, slot);
    add_in_slot(c.slots[slot].total_ns, total, slot);
    std::uint64_t m = c.max_ns.load(std::memory_order_relaxed);
    while (longest > m && !c.max_ns.compare_exchange_weak(m, longest, std::memory_order_relaxed)) {
    }
  }
};

}  // namespace

std::uint64_t run::account_plain(std::uint32_t slot, double ns_per) noexcept {
  op_counters* cur = nullptr;
  plain_tally t;
  std::uint64_t work = 0;
  for (std::uint32_t i = 0; i < count_; ++i) {
    const node_state& s = nodes_[i];
    std::uint8_t o = s.outcome.load(std::memory_order_acquire);
    if (o == pending || o == skipped) continue;
    auto d = static_cast<std::uint64_t>(static_cast<double>(s.ticks) * ns_per);
    op_runtime* op = plan_->nodes()[i].op;
    bool computes = op && s.cpu_ns && !op->async && !op->blocking();
    work += computes ? std::min(d, s.cpu_ns) : d;
    if (!op) continue;
    op->learn(d);
    op_counters* c = i < counters_.size() ? counters_[i] : nullptr;
    if (!c) continue;
    if (c != cur) {
      if (cur) t.add_to(*cur, slot);
      cur = c;
      t = {};
    }
    ++t.calls;
    t.errors += o == threw;
    t.total += d;
    t.longest = std::max<std::uint64_t>(t.longest, d);
  }
  if (cur) t.add_to(*cur, slot);
  return work;
}

op_counters* run::counters_of(node_id n, const op_runtime* op, const op_runtime* last_op,
                              op_counters* last) noexcept {
  if (plan_) return n < counters_.size() ? counters_[n] : nullptr;
  if (!ops_) return nullptr;
  if (op == last_op) return last;
  try {
    return &ops_->get(graph_->nodes()[n].op);
  } catch (...) {
    return nullptr;  // no memory for a new entry: the call goes uncounted
  }
}

void run::account() noexcept {
  // One add per run of nodes of the same op, without a locked instruction where this thread
  // holds a counter slot (counter_slot.hpp).
  const std::uint32_t slot = counter_slot();
  const double ns_per = ns_per_tick();
  times_.op_ns = plan_ && !has_policies_ ? account_plain(slot, ns_per) : account_all(slot, ns_per);
  times_.wall_ns = static_cast<std::uint64_t>(static_cast<double>(ticks() - t0_) * ns_per);
  times_.peak_in_flight = peak_in_flight_.load(std::memory_order_relaxed);
  times_.deepest = deepest_;
}

std::uint64_t run::account_all(std::uint32_t slot, double ns_per) noexcept {
  op_counters* cur = nullptr;
  const op_runtime* cur_op = nullptr;
  op_tally t;
  std::uint64_t work = 0;
  for (std::uint32_t i = 0; i < count_; ++i) {
    const node_state& s = nodes_[i];
    // Acquire: an early end accounts while nodes may still be finishing.
    std::uint8_t o = s.outcome.load(std::memory_order_acquire);
    if (o == pending || o == skipped) continue;
    auto d = static_cast<std::uint64_t>(static_cast<double>(s.ticks) * ns_per);
    op_runtime* op = info(i).op;
    // What the direct call would spend in the op: its CPU time if it computes (descheduled
    // time is not work), its wall time if it waits (blocking, async).
    bool computes = op && s.cpu_ns && !op->async && !op->blocking();
    work += computes ? std::min(d, s.cpu_ns) : d;
    if (!op) continue;
    const bool hit = s.cache && s.cache->hit;  // the op did not run: nothing to learn
    if (!hit) op->learn(d);
    op_counters* c = counters_of(i, op, cur_op, cur);
    if (!c) continue;
    if (c != cur) {
      if (cur) t.add_to(*cur, slot);
      cur = c;
      cur_op = op;
      t = {};
    }
    t.batches += s.sent_batch;
    t.deduplicated += s.sent_counts.deduplicated;
    t.retries += s.sent_counts.resends;  // a batch's re-sends, on its first call
    t.timeouts += s.sent_counts.timeouts;
    t.errors += o == threw;
    if (hit) {
      ++t.hits;  // not a call of the op
      continue;
    }
    t.misses += s.cache && s.cache->miss;
    // Every attempt is a call of the op; the retries are counted on their own too.
    const std::uint64_t attempts = std::max<std::uint16_t>(s.attempts, 1);
    t.calls += attempts;
    t.retries += attempts - 1;
    t.timeouts += s.timeouts;
    if (s.rate_wait) t.rate_wait += ticks_to_ns(s.rate_wait);
    t.total += d;
    t.longest = std::max<std::uint64_t>(t.longest, d);
  }
  if (cur) t.add_to(*cur, slot);
  return work;
}

// ---- bounded calls ------------------------------------------------------------------------

void run::arm_limits(const call_limits& l) {
  limits_ = l;
  call_stop_ = std::stop_source();
  inherited_ = call_limits{l.deadline, call_stop_.get_token()};
  bounded_ = true;
  // Either may stop the call at once (a stop already requested, a deadline already passed).
  if (l.stop.stop_possible()) on_stop_.emplace(l.stop, stop_relay{this});
  if (l.deadline != steady_time::max()) {
    deadline_timer_ = add_timer(
        l.deadline,
        +[](void* r, std::uint64_t) noexcept { static_cast<run*>(r)->stop(deadline_passed); }, this,
        0);
  }
}

void run::disarm_limits() noexcept {
  if (!bounded_) return;
  // Both wait for a stop that is being made (it is short): then no stop comes any more.
  if (deadline_timer_) cancel_timer(std::exchange(deadline_timer_, 0));
  on_stop_.reset();
}

void run::copy_args(std::span<const void* const> args, const arg_copier* copier) noexcept {
  args_ = args;
  detachable_ = false;
  if (arg_held_) std::exchange(arg_held_, nullptr)->destroy(arg_at_);
  if (!copier) return;
  try {
    const std::size_t need = copier->size + copier->align;
    if (arg_cap_ < need) {
      arg_buf_.reset(new std::byte[need]);
      arg_cap_ = need;
    }
    auto at = reinterpret_cast<std::uintptr_t>(arg_buf_.get());
    at = (at + copier->align - 1) / copier->align * copier->align;
    arg_ptrs_.resize(args.size());
    copier->copy(reinterpret_cast<void*>(at), args.data(), arg_ptrs_.data());
    arg_held_ = copier;
    arg_at_ = reinterpret_cast<void*>(at);
    args_ = arg_ptrs_;
    detachable_ = true;
  } catch (...) {
    // No memory, or a copy constructor threw: the run reads the caller's arguments, and an
    // early end waits for the ops still running.
  }
}

void run::destroy_results() noexcept {
  if (arg_held_) std::exchange(arg_held_, nullptr)->destroy(arg_at_);
  if (trivial_results_) return;  // (their outcome stays `constructed` until the next reset)
  for (std::uint32_t i = 0; i < count_; ++i) {
    node_state& s = nodes_[i];
    if (s.outcome.load(std::memory_order_relaxed) == constructed) {
      info(i).kernel->destroy(s.out);
      s.outcome.store(ran, std::memory_order_relaxed);
    }
  }
}

}  // namespace xcs::detail
