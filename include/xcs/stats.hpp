// SPDX-License-Identifier: MIT
// What a jitted function did: calls, traces, fallbacks, parallelism and measured speedup.
#pragma once

#include <fmt/core.h>

#include <cstddef>
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

namespace xcs {

/// Per-op-name figures of one jitted function (and its copies), over all its plans.
struct op_stats {
  std::string name;
  std::uint64_t calls = 0;
  std::uint64_t errors = 0;  ///< runs that threw
  /// Time in the op; for an async op, from its start to its completion.
  std::uint64_t total_ns = 0;
  std::uint64_t max_ns = 0;
  /// Attempts after the first (xcs::retry); each also counts in `calls`.
  std::uint64_t retries = 0;
  std::uint64_t timeouts = 0;      ///< attempts that hit their xcs::timeout
  std::uint64_t rate_wait_ns = 0;  ///< time instances waited for xcs::rate_limit tokens
  /// Instances whose result came from the op's xcs::cache (kept, or computed meanwhile by
  /// another instance of the same key): the op did not run for them, nor count in `calls`.
  std::uint64_t cache_hits = 0;
  std::uint64_t cache_misses = 0;  ///< instances of a cached op that ran it (not found kept)
  /// An xcs::batch_op: the batches its calls went in (calls of its batch function). Its
  /// `calls` counts the calls of the op, items, duplicates included.
  std::uint64_t batches = 0;
  /// An xcs::batch_op: inputs sent once for several of its calls in one batch.
  std::uint64_t deduplicated = 0;
  bool blocking = false;  ///< runs on the blocking lane (hinted, or seen waiting)
  bool async = false;     ///< an xcs::async_op: waits for its completion holding no thread
};

/// A snapshot of `jitted::stats()`. Counters are exact; the analysis fields describe the most
/// recently compiled plan.
struct stats {
  std::uint64_t calls = 0;     ///< calls with plain arguments (not inlined in a trace)
  std::uint64_t traces = 0;    ///< signatures traced
  std::uint64_t retraces = 0;  ///< traces of a new signature while others were cached
  std::string retrace_reason;  ///< how the last retraced signature differed
  std::size_t cache_entries = 0;
  std::size_t cache_capacity = 0;
  std::uint64_t evictions = 0;
  /// Some signature ran a parallel plan, or a staged call that recorded op nodes.
  bool optimized = false;
  std::uint64_t fallback_calls = 0;  ///< calls that ran the callable directly
  std::string fallback_reason;       ///< the last fallback's reason; empty if none
  std::uint64_t plan_runs = 0;
  /// Calls that ran staged: the body read an op's result, so it runs on every call while its
  /// ops run as soon as their inputs are ready. Not counted in fallback_calls.
  std::uint64_t staged_calls = 0;
  /// Reads in staged calls that found their value not yet computed and waited for it.
  std::uint64_t syncs = 0;
  /// Reads of staged calls that waited while no other op of their call was in flight, with
  /// every op recorded since the previous read leading to the value read: the body ran
  /// serially there (a `push_back` of each op's result in a loop, say).
  std::uint64_t serial_reads = 0;
  /// The first serial read: where it is and what to write instead. Empty if none.
  std::string serial_read;
  /// What made the last staged signature staged ("the body reads ... at file.cpp:12").
  std::string staged_reason;
  /// The last compiled plan's graph, or the last staged call's: its nodes, its widest level
  /// (for a staged call, the most nodes seen in flight at once) and its longest chain.
  std::size_t nodes = 0;
  std::size_t parallel_groups = 0;  ///< plans only
  std::size_t max_parallelism = 0;
  std::size_t critical_path = 0;   ///< nodes on the longest chain
  double estimated_speedup = 1.0;  ///< nodes / critical path of the last plan
  /// Measured: the time the direct call would have spent in the ops over the wall time of the
  /// plan runs and staged calls (0 before any run). An op that computes counts its thread CPU
  /// time, not the time it sat descheduled; an op that waits (blocking, async) its wall time.
  double speedup = 0.0;
  std::vector<op_stats> ops;  ///< per op name, by total time, largest first
  /// Calls that threw xcs::deadline_exceeded (their own deadline, or one they inherited).
  std::uint64_t deadline_exceeded_calls = 0;
  /// Calls that threw xcs::cancelled (a stop requested on their token, or an inherited one).
  std::uint64_t cancelled_calls = 0;

  // The process's runtime, the same in every function's stats:
  /// Empty when the pool runs as configured; else what it lacks, in one sentence (say, "the
  /// blocking monitor could not start; blocking ops are found only by hint").
  std::string pool_degradation;
  std::uint32_t blocking_threads = 0;       ///< blocking-lane threads alive now
  std::uint32_t blocking_threads_peak = 0;  ///< the most blocking-lane threads alive at once
  /// Waits for a nested run on a CPU worker that suspended the waiting fiber, so that the
  /// worker ran other work meanwhile instead of holding its thread.
  std::uint64_t fiber_suspensions = 0;
};

/// Multi-line human-readable form.
std::string to_string(const stats& s);
std::ostream& operator<<(std::ostream& os, const stats& s);

}  // namespace xcs

/// `fmt::format("{}", f.stats())`: the text of `to_string`. Only fmt/core.h is needed here;
/// the text is made in the library.
template <>
struct fmt::formatter<xcs::stats> {
  constexpr auto parse(fmt::format_parse_context& ctx) { return ctx.begin(); }
  template <class FormatContext>
  auto format(const xcs::stats& s, FormatContext& ctx) const {
    auto out = ctx.out();
    for (char c : xcs::to_string(s)) *out++ = c;
    return out;
  }
};
