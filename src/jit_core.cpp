// SPDX-License-Identifier: MIT
// Plan cache, statistics, logging and strict mode of a jitted function.
#include "xcs/detail/jit_core.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <exception>
#include <mutex>
#include <shared_mutex>
#include <vector>

#include "blocking_lane.hpp"
#include "clock.hpp"
#include "compile.hpp"
#include "fiber.hpp"
#include "jit_core_impl.hpp"
#include "pool.hpp"
#include "xcs/detail/batch_groups.hpp"
#include "xcs/error.hpp"
#include "xcs/executor.hpp"

namespace xcs::detail {

jit_core::jit_core() : impl_(std::make_unique<impl>()) {}
jit_core::~jit_core() = default;

bool jit_core::log_enabled() noexcept {
  static const bool on = env_flag("XCS_LOG");
  return on;
}

bool jit_core::strict() noexcept {
  static const bool on = env_flag("XCS_STRICT");
  return on;
}

// ---- the cache ----------------------------------------------------------------------------

std::shared_ptr<cache_entry> jit_core::impl::find_or_add(const signature& sig, std::uint64_t now,
                                                         bool& fresh) {
  fresh = false;
  {
    std::shared_lock lock(cache_mutex);
    auto it = map.find(sig);
    if (it != map.end()) {
      it->second->last_use.store(now, std::memory_order_relaxed);
      return it->second;
    }
  }
  std::unique_lock lock(cache_mutex);
  auto it = map.find(sig);
  if (it != map.end()) return it->second;
  evict_to(capacity - 1);
  // Everything that may throw comes before the entry is published to other threads.
  auto e = std::make_shared<cache_entry>();
  e->last_use.store(now, std::memory_order_relaxed);
  std::string why = last_sig ? sig.difference(*last_sig) : std::string();
  std::optional<signature> copy = sig;
  map.emplace(sig, e);
  fresh = true;
  traces.fetch_add(1, std::memory_order_relaxed);
  last_sig.swap(copy);
  if (copy) {
    retraces.fetch_add(1, std::memory_order_relaxed);
    log([&] { return fmt::format("retrace: {}", why); });
    std::lock_guard info(info_mutex);
    retrace_reason.swap(why);
  } else {
    log([&] { return fmt::format("trace: {}", sig.to_string()); });
  }
  return e;
}

void jit_core::impl::evict_to(std::size_t n) {
  while (map.size() > n) {
    auto victim = std::min_element(map.begin(), map.end(), [](const auto& a, const auto& b) {
      return a.second->last_use.load(std::memory_order_relaxed) <
             b.second->last_use.load(std::memory_order_relaxed);
    });
    map.erase(victim);
    evictions.fetch_add(1, std::memory_order_relaxed);
  }
}

void jit_core::impl::publish(cache_entry& e, call_kind kind) {
  {
    std::lock_guard lock(e.mutex);
    e.kind.store(kind, std::memory_order_relaxed);
    e.ready.store(true, std::memory_order_release);
  }
  e.ready_cv.notify_all();
}

void jit_core::impl::forget(const signature& sig, const cache_entry& e) noexcept {
  // An entry that ran out of memory serves the calls waiting on it, then leaves the cache,
  // so that a later call traces again instead of falling back for good.
  try {
    std::unique_lock lock(cache_mutex);
    auto it = map.find(sig);
    if (it != map.end() && it->second.get() == &e) map.erase(it);
  } catch (...) {
  }
}

call_ticket jit_core::begin(const signature& sig) noexcept {
  impl_->mine().add(&call_counters::calls, 1);
  const std::uint64_t now = ticks();  // the LRU's clock
  call_ticket t;
  try {
    bool fresh = false;
    t.entry = impl_->find_or_add(sig, now, fresh);
    if (fresh) {
      t.kind = call_kind::trace;
      return t;
    }
    cache_entry& e = *t.entry;
    if (!e.ready.load(std::memory_order_acquire)) {
      std::unique_lock lock(e.mutex);
      e.ready_cv.wait(lock, [&] { return e.ready.load(std::memory_order_acquire); });
    }
    t.kind = e.kind.load(std::memory_order_acquire);
  } catch (...) {
    // No memory for a cache entry (or to wait for one): run directly, counted as a fallback.
    t.entry.reset();
    t.kind = call_kind::direct;
    std::lock_guard info(impl_->info_mutex);
    impl_->out_of_memory = true;
  }
  return t;
}

// ---- publishing a trace -------------------------------------------------------------------

void jit_core::publish_trace(call_ticket& t, const signature& sig, trace_output&& out) noexcept {
  compile_result c = compile(std::move(out.ir));
  cache_entry& e = *t.entry;
  if (c.status == compile_status::compiled) {
    try {
      e.counters.reserve(c.ir->nodes().size());
      for (const node& n : c.ir->nodes())
        e.counters.push_back(n.op ? &impl_->ops.get(n.op) : nullptr);
      out.recipe.plan_moves(*c.ir);
      e.recipe = std::move(out.recipe);
    } catch (...) {
      c.status = compile_status::out_of_memory;
    }
  }
  if (c.status != compile_status::compiled) {
    if (c.status == compile_status::no_parallelism) {
      publish_fallback(t, sig, fallback_cause::no_parallelism, std::move(c.reason));
    } else {
      publish_fallback(t, sig, fallback_cause::out_of_memory, {});
    }
    return;
  }
  e.compiled = std::move(c.compiled);
  {
    std::lock_guard info(impl_->info_mutex);
    impl_->nodes.store(c.ir->nodes().size(), std::memory_order_relaxed);
    impl_->groups.store(c.info.parallel_groups.size(), std::memory_order_relaxed);
    impl_->widest.store(c.info.max_parallelism, std::memory_order_relaxed);
    impl_->critical.store(c.info.critical_path.size(), std::memory_order_relaxed);
    impl_->estimated.store(c.info.estimated_speedup, std::memory_order_relaxed);
  }
  log([&] {
    return fmt::format("compiled {}: {} nodes, {} groups, widest {}, critical path {}",
                       sig.to_string(), c.ir->nodes().size(), c.info.parallel_groups.size(),
                       c.info.max_parallelism, c.info.critical_path.size());
  });
  impl_->optimized.store(true, std::memory_order_relaxed);
  impl_->publish(e, call_kind::plan);
  t.kind = call_kind::plan;
}

void jit_core::publish_fallback(call_ticket& t, const signature& sig, fallback_cause cause,
                                std::string reason) noexcept {
  cache_entry& e = *t.entry;
  const bool out_of_memory = cause == fallback_cause::out_of_memory;
  e.cause = cause;
  if (out_of_memory) impl_->forget(sig, e);
  try {
    std::lock_guard info(impl_->info_mutex);
    impl_->out_of_memory = out_of_memory;
    if (!out_of_memory) impl_->fallback_reason = reason;
  } catch (...) {
  }
  log([&] {
    return fmt::format("fallback for {}: {}", sig.to_string(),
                       out_of_memory ? kOutOfMemory : reason);
  });
  e.reason = std::move(reason);
  impl_->publish(e, call_kind::direct);
  t.kind = call_kind::direct;
}

// ---- running ------------------------------------------------------------------------------

finished_run jit_core::run_plan(const call_ticket& t, std::span<const void* const> args,
                                const arg_copier* copier) {
  cache_entry& e = *t.entry;
  run* r = e.runs.take([&] { return new run(*e.compiled); });
  try {
    r->reset(e.compiled->ir(), args, copier, e.counters, nullptr);
  } catch (...) {
    e.runs.give(r);  // no thread or memory for the deadline's timer
    throw;
  }
  auto record = [&] {
    my_counters mine = impl_->mine();
    mine.add(&call_counters::plan_runs, 1);
    mine.add(&call_counters::op_ns, r->times().op_ns);
    mine.add(&call_counters::wall_ns, r->times().wall_ns);
  };
  try {
    r->run_to_end();
  } catch (...) {
    record();  // an op threw, or the call stopped: the run still counts
    e.runs.give(r, e.compiled);
    throw;
  }
  record();
  return finished_run(*r, &e, e.recipe);
}

finished_run::~finished_run() {
  if (!home_) return;
  // A timed-out attempt may still run after a call that succeeded: the run is then left
  // behind, and keeps the plan its nodes read (the entry may go before they end).
  home_->runs.give(run_, run_->unfinished() ? home_->compiled : nullptr);
}

void* finished_run::value(value_id v) const { return run_->value(v); }

void jit_core::count_stopped(bool deadline) noexcept {
  (deadline ? impl_->deadline_exceeded_calls : impl_->cancelled_calls)
      .fetch_add(1, std::memory_order_relaxed);
}

void jit_core::count_direct(const call_ticket& t) {
  impl_->mine().add(&call_counters::fallback_calls, 1);
  if (!strict()) return;
  if (!t.entry || t.entry->cause == fallback_cause::out_of_memory) {
    throw error(std::string("xcs (XCS_STRICT): the call fell back: ") + kOutOfMemory);
  }
  if (t.entry->cause == fallback_cause::untraceable) {
    throw error("xcs (XCS_STRICT): the call fell back: " + t.entry->reason);
  }
}

void jit_core::impl::record_staged(const run& r, std::size_t node_count, bool falls_back) noexcept {
  my_counters c = mine();
  if (!falls_back) c.add(&call_counters::staged_calls, 1);
  c.add(&call_counters::syncs, r.syncs());
  c.add(&call_counters::op_ns, r.times().op_ns);
  c.add(&call_counters::wall_ns, r.times().wall_ns);
  if (node_count == 0) return;
  if (!optimized.load(std::memory_order_relaxed)) optimized.store(true, std::memory_order_relaxed);
  set(nodes, node_count);
  set(groups, 0);
  set(widest, r.times().peak_in_flight);
  set(critical, r.times().deepest);
  if (estimated.load(std::memory_order_relaxed) != 1.0) {
    estimated.store(1.0, std::memory_order_relaxed);
  }
}

// ---- reports ------------------------------------------------------------------------------

std::string jit_core::explain(const signature& sig, const trace_context& ctx,
                              const trace_output* out) const {
  bool cached;
  {
    std::shared_lock lock(impl_->cache_mutex);
    cached = impl_->map.count(sig) != 0;
  }
  std::string s =
      fmt::format("signature: {}\ncached: {}\n", sig.to_string(), cached ? "yes" : "no");
  if (ctx.went_staged()) {
    s += fmt::format("staged: {}\n", ctx.staged_reason());
    s += fmt::format("nodes before the read: {}\n", ctx.ir().nodes().size());
    s += ctx.ir().listing();
    xcs::stats st = stats();
    if (st.serial_reads > 0) {
      s += fmt::format("serial reads so far: {}\nfirst serial read: {}\n", st.serial_reads,
                       st.serial_read);
    }
    return s;
  }
  if (!out) return s + fmt::format("fallback: {}\n", ctx.reason());
  analysis a = analyze(out->ir);
  if (std::string why = plan_not_worth(out->ir, a); !why.empty()) {
    return s + fmt::format("fallback: {}\n", why);
  }
  s += fmt::format("nodes: {}\n", out->ir.nodes().size());
  s += out->ir.listing();
  s += "parallel groups:\n";
  for (std::size_t i = 0; i < a.parallel_groups.size(); ++i) {
    s += fmt::format("  {}:", i);
    for (node_id n : a.parallel_groups[i]) s += fmt::format(" %{}", n);
    s += "\n";
  }
  if (batch_grouping b = group_batches(out->ir, a); !b.groups.empty()) {
    s += "batches (calls per batch, level by level):\n" + describe_batches(b);
  }
  s += "critical path:";
  for (node_id n : a.critical_path) s += fmt::format(" %{}({})", n, out->ir.nodes()[n].name);
  s += fmt::format("\nmax parallelism: {}\nestimated speedup: {:.2f}\n", a.max_parallelism,
                   a.estimated_speedup);
  return s;
}

std::string jit_core::dot(const trace_context& ctx, const trace_output* out) {
  if (out) {
    analysis a = analyze(out->ir);
    if (std::string why = plan_not_worth(out->ir, a); !why.empty()) {
      return "// xcs: no graph: " + why + "\ndigraph xcs {}\n";
    }
    const batch_grouping b = group_batches(out->ir, a);
    std::vector<std::vector<node_id>> batches;
    for (const batch_group& g : b.groups) {
      const auto m = b.members_of(g);
      batches.emplace_back(m.begin(), m.end());
    }
    return out->ir.dot(a.parallel_groups, batches);
  }
  if (ctx.went_staged()) {
    return "// xcs: staged: " + ctx.staged_reason() + "; the graph up to that read\n" +
           ctx.ir().dot();
  }
  return "// xcs: no graph: " + ctx.reason() + "\ndigraph xcs {}\n";
}

void jit_core::set_capacity(std::size_t n) {
  std::unique_lock lock(impl_->cache_mutex);
  impl_->capacity = std::max<std::size_t>(n, 1);
  impl_->evict_to(impl_->capacity);
}

namespace {

/// The per-op figures, grouped by name (two ops may share one), largest total time first.
std::vector<op_stats> op_figures(const op_table& ops) {
  std::vector<op_stats> out;
  ops.for_each([&](const op_counters& c) {
    auto it = std::find_if(out.begin(), out.end(),
                           [&](const op_stats& o) { return o.name == c.op->name; });
    if (it == out.end()) {
      out.push_back({c.op->name});
      it = out.end() - 1;
    }
    it->calls += c.calls();
    it->errors += c.errors.load(std::memory_order_relaxed);
    it->total_ns += c.total_ns();
    it->max_ns = std::max(it->max_ns, c.max_ns.load(std::memory_order_relaxed));
    it->retries += c.retries.load(std::memory_order_relaxed);
    it->timeouts += c.timeouts.load(std::memory_order_relaxed);
    it->rate_wait_ns += c.rate_wait_ns.load(std::memory_order_relaxed);
    it->cache_hits += c.cache_hits.load(std::memory_order_relaxed);
    it->cache_misses += c.cache_misses.load(std::memory_order_relaxed);
    it->batches += c.batches.load(std::memory_order_relaxed);
    it->deduplicated += c.deduplicated.load(std::memory_order_relaxed);
    it->blocking = it->blocking || op_runtime::of(*c.op).blocking();
    it->async = it->async || c.op->async;
  });
  std::sort(out.begin(), out.end(),
            [](const op_stats& a, const op_stats& b) { return a.total_ns > b.total_ns; });
  return out;
}

}  // namespace

xcs::stats jit_core::stats() const {
  const impl& m = *impl_;
  xcs::stats s;
  s.calls = m.sum(&call_counters::calls);
  s.traces = m.traces.load(std::memory_order_relaxed);
  s.retraces = m.retraces.load(std::memory_order_relaxed);
  s.evictions = m.evictions.load(std::memory_order_relaxed);
  s.deadline_exceeded_calls = m.deadline_exceeded_calls.load(std::memory_order_relaxed);
  s.cancelled_calls = m.cancelled_calls.load(std::memory_order_relaxed);
  s.fallback_calls = m.sum(&call_counters::fallback_calls);
  s.plan_runs = m.sum(&call_counters::plan_runs);
  s.staged_calls = m.sum(&call_counters::staged_calls);
  s.syncs = m.sum(&call_counters::syncs);
  s.serial_reads = m.sum(&call_counters::serial_reads);
  s.optimized = m.optimized.load(std::memory_order_relaxed);
  std::uint64_t wall = m.sum(&call_counters::wall_ns);
  s.speedup =
      wall ? static_cast<double>(m.sum(&call_counters::op_ns)) / static_cast<double>(wall) : 0.0;
  {
    std::shared_lock lock(m.cache_mutex);
    s.cache_entries = m.map.size();
    s.cache_capacity = m.capacity;
  }
  std::string text, serial_text, serial_advice;
  code_site site, serial_site;
  {
    std::lock_guard info(m.info_mutex);
    s.fallback_reason = m.out_of_memory ? kOutOfMemory : m.fallback_reason;
    s.retrace_reason = m.retrace_reason;
    s.nodes = m.nodes.load(std::memory_order_relaxed);
    s.parallel_groups = m.groups.load(std::memory_order_relaxed);
    s.max_parallelism = m.widest.load(std::memory_order_relaxed);
    s.critical_path = m.critical.load(std::memory_order_relaxed);
    s.estimated_speedup = m.estimated.load(std::memory_order_relaxed);
    text = m.staged_text;
    site = m.staged_site;
    serial_text = m.serial_text;
    serial_advice = m.serial_advice;
    serial_site = m.serial_site;
  }
  // The source line is looked up here, when the reason is read, not on the call.
  if (!text.empty()) s.staged_reason = text + source_line(site);
  if (!serial_text.empty()) s.serial_read = serial_text + source_line(serial_site) + serial_advice;
  s.ops = op_figures(m.ops);
  if (const pool* p = pool::started()) s.pool_degradation = p->degradation();
  s.blocking_threads = lane_threads();
  s.blocking_threads_peak = lane_threads_peak();
  s.fiber_suspensions = fiber_worker::suspensions();
  return s;
}

// ---- messages for the template ------------------------------------------------------------

std::string unmappable_result(const std::type_info& body_returns,
                              const std::type_info& call_returns) {
  return fmt::format("the body returns {}, which xcs cannot map onto the direct call's {}",
                     graph::type_name(body_returns), graph::type_name(call_returns));
}

std::string assigned_argument(std::size_t position) {
  return fmt::format(
      "the body assigns to argument {}, which it takes by reference; the plan cannot write to "
      "the caller's arguments",
      position);
}

std::string body_threw(const std::exception_ptr& e) {
  try {
    std::rethrow_exception(e);
  } catch (const std::bad_alloc&) {
    return {};  // out of memory: said without allocating a sentence for it
  } catch (const std::exception& ex) {
    return fmt::format("the body threw {} at trace time: {}", graph::type_name(typeid(ex)),
                       ex.what());
  } catch (...) {
    return "the body threw a non-standard exception at trace time";
  }
}

}  // namespace xcs::detail
