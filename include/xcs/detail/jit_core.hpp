// SPDX-License-Identifier: MIT
// The non-template half of a jitted function: plan cache, statistics, logging, strict mode.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "xcs/analysis.hpp"
#include "xcs/detail/op_table.hpp"
#include "xcs/plan.hpp"
#include "xcs/signature.hpp"
#include "xcs/stats.hpp"

namespace xcs::detail {

/// One signature's cache slot: a plan, or the reason it falls back.
struct cache_entry {
  std::mutex mutex;  // with ready_cv: for threads that wait for the trace
  std::condition_variable ready_cv;
  /// Set (release) once `compiled` and `reason` are final; read (acquire) on every call.
  std::atomic<bool> ready{false};
  // Written once before `ready`, read-only after.
  std::shared_ptr<const plan> compiled;
  std::string reason;
  std::atomic<std::uint64_t> last_use{0};  // relaxed: LRU hint
};

/// What one trace produced.
struct trace_result {
  std::shared_ptr<const graph> ir;
  analysis info;
  result_recipe recipe;
  std::string reason;  ///< empty if the trace can become a plan
};

class jit_core {
 public:
  /// Bound of the plan cache per jitted function (signatures). Past it, the least recently
  /// used entry is dropped; calls running its plan keep it alive.
  static constexpr std::size_t default_capacity = 64;

  jit_core() = default;

  /// The entry for `sig`; `trace` is set if this call must trace it (it was not cached).
  std::shared_ptr<cache_entry> lookup(const signature& sig, std::uint64_t now, bool& trace);
  /// Blocks until another thread's trace of `e` is published.
  static void wait_ready(cache_entry& e) {
    if (!e.ready.load(std::memory_order_acquire)) wait_slow(e);
  }
  /// Publishes a trace's outcome into `e` (compiling it), and counts it.
  void publish(cache_entry& e, const signature& sig, trace_result t) noexcept;
  /// Counts a fallback call; in strict mode (XCS_STRICT=1) throws xcs::error instead.
  void fallback(const cache_entry& e);
  /// Counts a plan run, one that threw included.
  void record_run(const plan::run_times& t) noexcept {
    plan_runs_.fetch_add(1, std::memory_order_relaxed);
    op_ns_.fetch_add(t.op_ns, std::memory_order_relaxed);
    wall_ns_.fetch_add(t.wall_ns, std::memory_order_relaxed);
  }
  /// Counts a call; returns its number, which doubles as the cache's LRU clock.
  std::uint64_t count_call() noexcept { return calls_.fetch_add(1, std::memory_order_relaxed); }

  /// A dry-run report of a trace, for jitted::explain.
  std::string explain(const signature& sig, const trace_result& t) const;
  bool cached(const signature& sig) const;
  void set_capacity(std::size_t n);

  xcs::stats stats() const;

 private:
  static void wait_slow(cache_entry& e);
  void evict_to(std::size_t n);  // with cache_mutex_ held: drops LRU entries down to n

 public:
  /// XCS_LOG=1: one line per trace, retrace, fallback and compile on stderr.
  static bool log_enabled() noexcept;
  /// XCS_STRICT=1: fallbacks throw.
  static bool strict() noexcept;

 private:
  // Counters: relaxed, read only for reporting.
  std::atomic<std::uint64_t> calls_{0}, traces_{0}, retraces_{0}, evictions_{0}, fallback_calls_{0},
      plan_runs_{0}, op_ns_{0}, wall_ns_{0};
  std::atomic<bool> optimized_{false};

  mutable std::shared_mutex cache_mutex_;  // guards map_, capacity_, last_sig_
  std::unordered_map<signature, std::shared_ptr<cache_entry>> map_;
  std::size_t capacity_ = default_capacity;
  std::optional<signature> last_sig_;

  mutable std::mutex info_mutex_;  // guards the fields below
  std::string fallback_reason_;
  bool out_of_memory_ = false;  // the last fallback ran out of memory (reason: a constant)
  std::string retrace_reason_;
  std::size_t nodes_ = 0, groups_ = 0, widest_ = 0, critical_ = 0;
  double estimated_ = 1.0;
  std::shared_ptr<op_table> ops_ = std::make_shared<op_table>();
};

}  // namespace xcs::detail
