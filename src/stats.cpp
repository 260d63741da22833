// SPDX-License-Identifier: MIT
// Printing stats.
#include "xcs/stats.hpp"

#include <fmt/format.h>

#include <ostream>

namespace xcs {

std::string to_string(const stats& s) {
  std::string out = fmt::format(
      "xcs stats: calls={} traces={} retraces={} cache_entries={}/{} evictions={}\n"
      "  optimized={} plan_runs={} staged_calls={} syncs={} serial_reads={} fallback_calls={}\n"
      "  nodes={} parallel_groups={} max_parallelism={} critical_path={}\n"
      "  estimated_speedup={:.2f} speedup={:.2f} (measured: op work / wall time)",
      s.calls, s.traces, s.retraces, s.cache_entries, s.cache_capacity, s.evictions, s.optimized,
      s.plan_runs, s.staged_calls, s.syncs, s.serial_reads, s.fallback_calls, s.nodes,
      s.parallel_groups, s.max_parallelism, s.critical_path, s.estimated_speedup, s.speedup);
  if (!s.fallback_reason.empty()) out += fmt::format("\n  fallback_reason: {}", s.fallback_reason);
  if (!s.staged_reason.empty()) out += fmt::format("\n  staged_reason: {}", s.staged_reason);
  if (!s.serial_read.empty()) out += fmt::format("\n  serial_read: {}", s.serial_read);
  if (!s.retrace_reason.empty()) out += fmt::format("\n  retrace_reason: {}", s.retrace_reason);
  if (s.blocking_threads_peak > 0 || s.fiber_suspensions > 0) {
    out += fmt::format("\n  runtime: blocking_threads={} (peak {}) fiber_suspensions={}",
                       s.blocking_threads, s.blocking_threads_peak, s.fiber_suspensions);
  }
  if (!s.pool_degradation.empty()) out += fmt::format("\n  pool degraded: {}", s.pool_degradation);
  if (s.deadline_exceeded_calls > 0 || s.cancelled_calls > 0) {
    out += fmt::format("\n  deadline_exceeded_calls={} cancelled_calls={}",
                       s.deadline_exceeded_calls, s.cancelled_calls);
  }
  for (const op_stats& o : s.ops) {
    out += fmt::format("\n  op {:<16} calls={} errors={} total={:.3f}ms max={:.3f}ms", o.name,
                       o.calls, o.errors, static_cast<double>(o.total_ns) / 1e6,
                       static_cast<double>(o.max_ns) / 1e6);
    // The policies' counters, where an op has had any.
    if (o.retries > 0) out += fmt::format(" retries={}", o.retries);
    if (o.timeouts > 0) out += fmt::format(" timeouts={}", o.timeouts);
    if (o.rate_wait_ns > 0) {
      out += fmt::format(" rate_wait={:.3f}ms", static_cast<double>(o.rate_wait_ns) / 1e6);
    }
    if (o.cache_hits > 0) out += fmt::format(" cache_hits={}", o.cache_hits);
    if (o.cache_misses > 0) out += fmt::format(" cache_misses={}", o.cache_misses);
    if (o.batches > 0) out += fmt::format(" batches={}", o.batches);
    if (o.deduplicated > 0) out += fmt::format(" deduplicated={}", o.deduplicated);
    if (o.blocking) out += " blocking";
    if (o.async) out += " async";
  }
  return out;
}

std::ostream& operator<<(std::ostream& os, const stats& s) { return os << to_string(s); }

}  // namespace xcs
