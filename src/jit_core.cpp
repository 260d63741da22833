// SPDX-License-Identifier: MIT
// Plan cache, statistics, logging and strict mode of a jitted function.
#include "xcs/detail/jit_core.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>

#include "xcs/error.hpp"

namespace xcs::detail {
namespace {

constexpr const char* kOutOfMemory = "out of memory while tracing or compiling";

bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::strcmp(v, "0") != 0;
}

/// One line on stderr when XCS_LOG is set. A macro-free lazy form: the arguments are built
/// only when logging is on, so it costs one branch when off.
template <class MakeLine>
void log(MakeLine&& make_line) {
  if (!jit_core::log_enabled()) return;
  std::string line = make_line();
  std::fprintf(stderr, "[xcs] %s\n", line.c_str());
}
}  // namespace

bool jit_core::log_enabled() noexcept {
  static const bool on = env_flag("XCS_LOG");
  return on;
}

bool jit_core::strict() noexcept {
  static const bool on = env_flag("XCS_STRICT");
  return on;
}

std::shared_ptr<cache_entry> jit_core::lookup(const signature& sig, std::uint64_t now,
                                              bool& trace) {
  trace = false;
  {
    std::shared_lock lock(cache_mutex_);
    auto it = map_.find(sig);
    if (it != map_.end()) {
      it->second->last_use.store(now, std::memory_order_relaxed);
      return it->second;
    }
  }
  std::unique_lock lock(cache_mutex_);
  auto it = map_.find(sig);
  if (it != map_.end()) return it->second;
  evict_to(capacity_ - 1);
  // Everything that may throw comes before the entry is published to other threads.
  auto e = std::make_shared<cache_entry>();
  e->last_use.store(now, std::memory_order_relaxed);
  std::string why = last_sig_ ? sig.difference(*last_sig_) : std::string();
  std::optional<signature> copy = sig;
  map_.emplace(sig, e);
  trace = true;
  traces_.fetch_add(1, std::memory_order_relaxed);
  last_sig_.swap(copy);
  if (copy) {
    retraces_.fetch_add(1, std::memory_order_relaxed);
    try {
      log([&] { return fmt::format("retrace: {}", why); });
      std::lock_guard info(info_mutex_);
      retrace_reason_.swap(why);
    } catch (...) {
    }
  } else {
    try {
      log([&] { return fmt::format("trace: {}", sig.to_string()); });
    } catch (...) {
    }
  }
  return e;
}

void jit_core::wait_slow(cache_entry& e) {
  std::unique_lock lock(e.mutex);
  e.ready_cv.wait(lock, [&] { return e.ready.load(std::memory_order_acquire); });
}

void jit_core::publish(cache_entry& e, const signature& sig, trace_result t) noexcept {
  std::shared_ptr<const plan> p;
  std::string reason = std::move(t.reason);
  bool failed = !t.ir;  // a trace that produced no graph failed, reason or not (no memory)
  if (!failed) {
    try {
      p = std::make_shared<const plan>(t.ir, t.info, std::move(t.recipe), ops_);
    } catch (...) {
      failed = true;
    }
  }
  // A trace or compile that failed without a reason ran out of memory (the reason itself may
  // not fit). Such an entry serves the calls waiting on it, then leaves the cache, so that a
  // later call traces again instead of falling back for good.
  bool out_of_memory = failed && reason.empty();
  if (out_of_memory) {
    {
      std::lock_guard info(info_mutex_);
      fallback_reason_.clear();
      out_of_memory_ = true;
    }
    try {
      std::unique_lock lock(cache_mutex_);
      auto it = map_.find(sig);
      if (it != map_.end() && it->second.get() == &e) map_.erase(it);
    } catch (...) {
    }
  }
  try {
    std::lock_guard info(info_mutex_);
    if (p) {
      nodes_ = t.ir->nodes().size();
      groups_ = t.info.parallel_groups.size();
      widest_ = t.info.max_parallelism;
      critical_ = t.info.critical_path.size();
      estimated_ = t.info.estimated_speedup;
      log([&] {
        return fmt::format("compiled {}: {} nodes, {} groups, widest {}, critical path {}",
                           sig.to_string(), nodes_, groups_, widest_, critical_);
      });
    } else if (!out_of_memory) {
      fallback_reason_ = reason;
      out_of_memory_ = false;
      log([&] { return fmt::format("fallback for {}: {}", sig.to_string(), reason); });
    }
  } catch (...) {
  }
  if (p) optimized_.store(true, std::memory_order_relaxed);
  {
    std::lock_guard lock(e.mutex);
    e.compiled = std::move(p);
    e.reason = std::move(reason);
    e.ready.store(true, std::memory_order_release);
  }
  e.ready_cv.notify_all();
}

void jit_core::fallback(const cache_entry& e) {
  fallback_calls_.fetch_add(1, std::memory_order_relaxed);
  if (strict()) {
    throw error(std::string("xcs (XCS_STRICT): the call fell back: ") +
                (e.reason.empty() ? kOutOfMemory : e.reason.c_str()));
  }
}

bool jit_core::cached(const signature& sig) const {
  std::shared_lock lock(cache_mutex_);
  return map_.count(sig) != 0;
}

void jit_core::set_capacity(std::size_t n) {
  std::unique_lock lock(cache_mutex_);
  capacity_ = std::max<std::size_t>(n, 1);
  evict_to(capacity_);
}

void jit_core::evict_to(std::size_t n) {
  while (map_.size() > n) {
    auto victim = std::min_element(map_.begin(), map_.end(), [](const auto& a, const auto& b) {
      return a.second->last_use.load(std::memory_order_relaxed) <
             b.second->last_use.load(std::memory_order_relaxed);
    });
    map_.erase(victim);
    evictions_.fetch_add(1, std::memory_order_relaxed);
  }
}

std::string jit_core::explain(const signature& sig, const trace_result& t) const {
  std::string out =
      fmt::format("signature: {}\ncached: {}\n", sig.to_string(), cached(sig) ? "yes" : "no");
  if (!t.reason.empty()) {
    out += fmt::format("fallback: {}\n", t.reason);
    return out;
  }
  out += fmt::format("nodes: {}\n", t.ir->nodes().size());
  out += t.ir->listing();
  out += "parallel groups:\n";
  for (std::size_t i = 0; i < t.info.parallel_groups.size(); ++i) {
    out += fmt::format("  {}:", i);
    for (node_id n : t.info.parallel_groups[i]) out += fmt::format(" %{}", n);
    out += "\n";
  }
  out += "critical path:";
  for (node_id n : t.info.critical_path) {
    out += fmt::format(" %{}({})", n, t.ir->nodes()[n].name);
  }
  out += fmt::format("\nmax parallelism: {}\nestimated speedup: {:.2f}\n", t.info.max_parallelism,
                     t.info.estimated_speedup);
  return out;
}

xcs::stats jit_core::stats() const {
  xcs::stats s;
  s.calls = calls_.load(std::memory_order_relaxed);
  s.traces = traces_.load(std::memory_order_relaxed);
  s.retraces = retraces_.load(std::memory_order_relaxed);
  s.evictions = evictions_.load(std::memory_order_relaxed);
  s.fallback_calls = fallback_calls_.load(std::memory_order_relaxed);
  s.plan_runs = plan_runs_.load(std::memory_order_relaxed);
  s.optimized = optimized_.load(std::memory_order_relaxed);
  std::uint64_t wall = wall_ns_.load(std::memory_order_relaxed);
  s.speedup =
      wall ? static_cast<double>(op_ns_.load(std::memory_order_relaxed)) / static_cast<double>(wall)
           : 0.0;
  {
    std::shared_lock lock(cache_mutex_);
    s.cache_entries = map_.size();
    s.cache_capacity = capacity_;
  }
  std::lock_guard info(info_mutex_);
  s.fallback_reason = out_of_memory_ ? kOutOfMemory : fallback_reason_;
  s.retrace_reason = retrace_reason_;
  s.nodes = nodes_;
  s.parallel_groups = groups_;
  s.max_parallelism = widest_;
  s.critical_path = critical_;
  s.estimated_speedup = estimated_;
  // Ops are grouped by name: two ops may share one.
  ops_->for_each([&](const op_counters& c) {
    auto it = std::find_if(s.ops.begin(), s.ops.end(),
                           [&](const op_stats& o) { return o.name == c.op->name; });
    if (it == s.ops.end()) {
      s.ops.push_back({c.op->name});
      it = s.ops.end() - 1;
    }
    it->calls += c.calls.load(std::memory_order_relaxed);
    it->errors += c.errors.load(std::memory_order_relaxed);
    it->total_ns += c.total_ns.load(std::memory_order_relaxed);
    it->max_ns = std::max(it->max_ns, c.max_ns.load(std::memory_order_relaxed));
    it->blocking = it->blocking || c.op->blocking_hint ||
                   c.op->observed_blocking.load(std::memory_order_relaxed);
  });
  std::sort(s.ops.begin(), s.ops.end(),
            [](const op_stats& a, const op_stats& b) { return a.total_ns > b.total_ns; });
  return s;
}

}  // namespace xcs::detail
