// SPDX-License-Identifier: MIT
// The non-template half of a jitted function: the plan cache, the pipeline behind it
// (graph -> analysis -> plan), statistics, logging and strict mode. Its state lives in src/.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>

#include "xcs/detail/arg_copy.hpp"
#include "xcs/detail/graph.hpp"
#include "xcs/detail/result.hpp"
#include "xcs/detail/signature.hpp"
#include "xcs/detail/trace_context.hpp"
#include "xcs/stats.hpp"

namespace xcs::detail {

struct cache_entry;

/// How one call runs, as the cache decides it.
enum class call_kind : std::uint8_t {
  plan,    ///< run the signature's compiled plan
  staged,  ///< run the body staged: its reads wait for values (see trace_context)
  trace,   ///< first call of the signature: trace it (this call may go staged midway)
  direct,  ///< call the callable directly (the fallback)
};

/// Why a signature runs the callable directly.
enum class fallback_cause : std::uint8_t {
  untraceable,     ///< the body cannot run traced (XCS_STRICT=1 throws for it)
  no_parallelism,  ///< traced, but nothing to run at the same time: direct is as fast
  out_of_memory,   ///< no memory to trace or compile; a later call traces again
};

/// One call's claim on a cache entry.
struct call_ticket {
  call_kind kind = call_kind::direct;
  std::shared_ptr<cache_entry> entry;  ///< null when the call runs directly for want of memory
};

/// What a trace that ran to its end without running anything produced.
struct trace_output {
  graph ir;
  result_recipe recipe;
};

class run;
class jit_core;

/// The values of a finished run, until destroyed; then a plan's run goes back to its entry.
class finished_run final : public finished_values {
 public:
  /// `home`: the entry whose plan `r` ran (it takes the run back), or null for a staged
  /// call's run, which the call gives back itself.
  finished_run(run& r, cache_entry* home, const result_recipe& recipe) noexcept
      : run_(&r), home_(home), recipe_(&recipe) {}
  finished_run(const finished_run&) = delete;
  finished_run& operator=(const finished_run&) = delete;
  ~finished_run();
  void* value(value_id v) const override;
  const result_recipe& recipe() const noexcept { return *recipe_; }

 private:
  run* run_;
  cache_entry* home_;
  const result_recipe* recipe_;
};

/// One traced call (recording, or staged from the start): the trace's sink. Once the trace
/// goes staged it takes a run from the signature's entry and feeds it the body's nodes and
/// reads; at the end it counts the call and gives the run back.
class staged_call final : public trace_sink {
 public:
  staged_call(jit_core& core, call_ticket& t, const signature& sig,
              std::span<const void* const> args, const arg_copier* copier) noexcept
      : core_(core), ticket_(t), sig_(sig), args_(args), copier_(copier) {}
  staged_call(const staged_call&) = delete;
  staged_call& operator=(const staged_call&) = delete;
  ~staged_call();

  void went_staged(const trace_context& ctx) override;
  void node_added(node_id n) override;
  const void* read(value_id v, const std::type_info& as, const void* pc) override;
  std::exception_ptr drain() noexcept override;

  /// Hands the trace its buffers (`ir` and `recipe`, both empty): the vectors of an earlier
  /// staged call of the signature, given back cleared, or else room for as many nodes as the
  /// signature's last staged call recorded. So a staged call allocates none of them.
  void lend_buffers(graph& ir, result_recipe& recipe);
  /// At the end of a call that ran staged and drained (a drain is only ever a staged call's;
  /// else this does nothing): `ir` and `recipe`, cleared, are kept by the signature for its
  /// next staged call (one set; a second given back at once is freed), unless the trace is
  /// large (see kKeptTraceNodes).
  void give_back_buffers(graph& ir, result_recipe& recipe) noexcept;
  /// After drain(): the values of the call, for building its result.
  finished_run values(const result_recipe& recipe);
  /// After drain(): if the call recorded no node, its signature now falls back; this counts
  /// the call as a fallback, and in strict mode (XCS_STRICT=1) throws xcs::error.
  void finish_fallback();

 private:
  jit_core& core_;
  call_ticket& ticket_;
  const signature& sig_;
  std::span<const void* const> args_;
  const arg_copier* copier_;
  const trace_context* ctx_ = nullptr;
  run* run_ = nullptr;
  std::exception_ptr drained_;
  bool drained_once_ = false;
  std::uint64_t serial_reads_ = 0;
  bool first_of_signature_ = false;     // this call's trace made the signature staged
  bool fell_back_ = false;              // it recorded no node: the signature falls back
  std::unique_ptr<trace_output> lent_;  // what held the lent buffers, to hold them again
};

/// A traced call's buffers: lent by the signature when the trace starts, and offered back as
/// the call ends (after its result is built, or as an exception leaves), which keeps them only
/// if the call ran staged and drained (see give_back_buffers).
class trace_buffers_lease {
 public:
  trace_buffers_lease(staged_call& s, graph& ir, result_recipe& recipe)
      : staged_(s), ir_(ir), recipe_(recipe) {
    s.lend_buffers(ir, recipe);
  }
  ~trace_buffers_lease() { staged_.give_back_buffers(ir_, recipe_); }
  trace_buffers_lease(const trace_buffers_lease&) = delete;
  trace_buffers_lease& operator=(const trace_buffers_lease&) = delete;

 private:
  staged_call& staged_;
  graph& ir_;
  result_recipe& recipe_;
};

class jit_core {
 public:
  /// Bound of the plan cache per jitted function (signatures). Past it, the least recently
  /// used entry is dropped; calls running its plan keep it alive.
  static constexpr std::size_t default_capacity = 64;

  jit_core();
  ~jit_core();
  jit_core(const jit_core&) = delete;
  jit_core& operator=(const jit_core&) = delete;

  /// Counts the call and finds how it runs: a cached plan, staged, direct, or (first call of
  /// `sig`) a trace. Waits while another thread traces `sig`. Never throws: out of memory, it
  /// answers `direct`, counted as a fallback with that reason.
  call_ticket begin(const signature& sig) noexcept;

  /// Runs the entry's plan on `args` (copied with `copier`, see run::reset); rethrows an op's
  /// exception (the first in program order), or the call's deadline or cancellation.
  finished_run run_plan(const call_ticket& t, std::span<const void* const> args,
                        const arg_copier* copier);

  /// A trace that ran to its end: analyzes and compiles it, and turns `t` into a plan call
  /// or, when the graph has nothing to run at the same time or memory runs out, a direct one.
  void publish_trace(call_ticket& t, const signature& sig, trace_output&& out) noexcept;
  /// The signature runs directly, for `cause`, with `reason` (ignored for out of memory: an
  /// out-of-memory entry serves the calls waiting on it, then a later call traces again).
  void publish_fallback(call_ticket& t, const signature& sig, fallback_cause cause,
                        std::string reason) noexcept;

  /// Counts a direct call. In strict mode (XCS_STRICT=1) a call whose body could not be traced
  /// (or ran out of memory) throws xcs::error; a graph with nothing to run in parallel does not.
  void count_direct(const call_ticket& t);
  /// Counts a call that threw xcs::deadline_exceeded (or xcs::cancelled).
  void count_stopped(bool deadline) noexcept;

  /// A dry-run report of a trace, for jitted::explain.
  std::string explain(const signature& sig, const trace_context& ctx,
                      const trace_output* out) const;
  /// Graphviz DOT of a dry trace (`out`: what it produced, if it ran to its end).
  static std::string dot(const trace_context& ctx, const trace_output* out);
  void set_capacity(std::size_t n);
  xcs::stats stats() const;

  /// XCS_LOG=1: one line per trace, retrace, fallback, staged signature and compile.
  static bool log_enabled() noexcept;
  /// XCS_STRICT=1: calls that could not be traced throw.
  static bool strict() noexcept;

 private:
  friend class staged_call;
  struct impl;
  std::unique_ptr<impl> impl_;
};

}  // namespace xcs::detail
