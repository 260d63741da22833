// SPDX-License-Identifier: MIT
// xcs::jit: the entry point. call -> signature -> plan cache -> [trace -> graph -> analysis ->
// plan] -> run -> result.
#pragma once

#include <fmt/format.h>

#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "xcs/analysis.hpp"
#include "xcs/detail/jit_core.hpp"
#include "xcs/detail/record.hpp"
#include "xcs/detail/result.hpp"
#include "xcs/detail/trace_context.hpp"
#include "xcs/graph.hpp"
#include "xcs/plan.hpp"
#include "xcs/signature.hpp"
#include "xcs/stats.hpp"
#include "xcs/traced.hpp"

namespace xcs {

namespace detail {
/// An array argument as the pointer it decays to; anything else forwarded unchanged.
template <class A>
decltype(auto) decay_array(A&& a) noexcept {
  if constexpr (std::is_array_v<std::remove_reference_t<A>>) {
    return static_cast<std::decay_t<A>>(a);
  } else {
    return std::forward<A>(a);
  }
}
}  // namespace detail

/// A jitted function: wraps a callable, usually a generic lambda, and runs the independent ops
/// of each call at the same time.
///
/// On the first call with a new signature (decayed argument types plus container sizes) the
/// callable runs once on traced values; no op runs then. The ops it records form a graph,
/// which is analyzed and compiled into a plan cached for that signature. Each call then runs
/// the plan: every op exactly once, each as soon as its inputs are ready, on the calling
/// thread and the process-wide pool. The call returns what the direct call returns, and
/// throws what it throws (the exception of the first throwing op in program order).
///
/// When tracing or compiling fails, or the graph has no independent ops, the call (and later
/// calls with that signature) runs the callable directly; `stats().fallback_reason` says why.
///
/// Thread-safe: call it from many threads at once; copies share one cache.
///
///     auto pipeline = xcs::jit([](auto a, auto b) { return score(summarize(a), summarize(b)); });
///     double s = pipeline(doc_a, doc_b);  // both summaries run at once
///     fmt::print("{}\n", pipeline.stats());
template <class F>
class jitted {
 public:
  explicit jitted(F f) : s_(std::make_shared<state>(std::move(f))) {}

  template <class... Args>
  decltype(auto) operator()(Args&&... args) const {
    if constexpr ((std::is_array_v<std::remove_reference_t<Args>> || ...)) {
      // A string literal or C array argument is passed on as the pointer it decays to, as a
      // by-value parameter of the body would receive it.
      return (*this)(detail::decay_array(std::forward<Args>(args))...);
    } else if constexpr ((detail::is_trace_input_v<Args> || ...)) {
      // Called from a body being traced: the inner body records into the outer trace.
      return std::invoke(s_->fn, std::forward<Args>(args)...);
    } else {
      using R = std::invoke_result_t<F&, Args&&...>;
      if (auto* ctx = detail::trace_context::current()) {
        ctx->abort(
            "a jitted function was called with only plain arguments while tracing; its ops "
            "would run at trace time");
      }
      detail::jit_core& core = s_->core;
      std::uint64_t call = core.count_call();
      signature sig = signature::of(args...);
      bool must_trace = false;
      std::shared_ptr<detail::cache_entry> e;
      try {
        e = core.lookup(sig, call, must_trace);
      } catch (const std::bad_alloc&) {
        // No memory for a cache entry: run directly, as a failed trace would.
        return std::invoke(s_->fn, std::forward<Args>(args)...);
      }
      if (must_trace) {
        // Every path publishes the entry: other threads wait on it.
        detail::trace_result t;
        try {
          t = trace<R>(args...);
        } catch (...) {
          t = {};
        }
        core.publish(*e, sig, std::move(t));
      } else {
        detail::jit_core::wait_ready(*e);
      }
      if constexpr (!std::is_reference_v<R>) {
        if (e->compiled) {
          const void* ptrs[sizeof...(Args) + 1] = {std::addressof(args)...};
          plan::run_times times;
          std::optional<plan::result> r;
          try {
            r.emplace(e->compiled->run({ptrs, sizeof...(Args)}, times));
          } catch (...) {
            core.record_run(times);  // an op threw: the run still counts
            throw;
          }
          core.record_run(times);
          return e->compiled->template build<R>(*r);
        }
      }
      core.fallback(*e);
      return std::invoke(s_->fn, std::forward<Args>(args)...);
    }
  }

  /// A snapshot of what this function (and its copies) did. Thread-safe.
  xcs::stats stats() const { return s_->core.stats(); }

  /// A dry run for `args`' signature: traces without running any op (and without touching the
  /// cache) and reports the signature, whether it is cached, the IR listing, the parallel
  /// groups, the critical path and the estimated speedup, or the fallback reason.
  template <class... Args>
  std::string explain(const Args&... args) const {
    if constexpr ((std::is_array_v<Args> || ...)) {
      return explain(detail::decay_array(args)...);
    } else {
      using R = std::invoke_result_t<F&, const Args&...>;
      return s_->core.explain(signature::of(args...), trace<R>(args...));
    }
  }

  /// Graphviz DOT of the graph `args` would trace to; parallel groups are drawn as ranked
  /// clusters. Empty graph (and a comment with the reason) if the trace falls back.
  template <class... Args>
  std::string dot(const Args&... args) const {
    if constexpr ((std::is_array_v<Args> || ...)) {
      return dot(detail::decay_array(args)...);
    } else {
      using R = std::invoke_result_t<F&, const Args&...>;
      detail::trace_result t = trace<R>(args...);
      if (!t.reason.empty()) return "// xcs: no graph: " + t.reason + "\ndigraph xcs {}\n";
      return t.ir->dot(t.info.parallel_groups);
    }
  }

  /// Sets the bound of the plan cache (default jit_core::default_capacity signatures).
  void set_cache_capacity(std::size_t n) const { s_->core.set_capacity(n); }

 private:
  struct state {
    explicit state(F f) : fn(std::move(f)) {}
    F fn;
    detail::jit_core core;
  };

  /// Traces the callable on proxies of `args`. Never throws: every failure becomes a reason.
  template <class R, class... Args>
  detail::trace_result trace(const Args&... args) const {
    detail::trace_result out;
    try {
      auto ctx = std::make_unique<detail::trace_context>();
      trace_body<R>(*ctx, out, std::index_sequence_for<Args...>{}, args...);
      if (out.reason.empty()) {
        out.info = analyze(ctx->g);
        std::size_t n = ctx->g.nodes().size();
        if (n == 0) {
          out.reason = "the body records no ops";
        } else if (out.info.max_parallelism < 2) {
          out.reason = fmt::format(
              "no independent ops: the {} op(s) form a single chain, so a plan cannot run "
              "anything at the same time",
              n);
        } else {
          out.ir = std::make_shared<const graph>(std::move(ctx->g));
        }
      }
    } catch (const std::bad_alloc&) {
      // Left without a reason: jit_core::publish reports running out of memory without
      // allocating a sentence for it.
      out.ir.reset();
      out.reason.clear();
      return out;
    } catch (const std::exception& ex) {
      out.reason = fmt::format("tracing failed: {}", ex.what());
    } catch (...) {
      out.reason = "tracing failed with an unknown exception";
    }
    if (!out.reason.empty()) out.ir.reset();
    return out;
  }

  template <class R, std::size_t... I, class... Args>
  void trace_body(detail::trace_context& ctx, detail::trace_result& out, std::index_sequence<I...>,
                  const Args&... args) const {
    detail::trace_context::scope scope(ctx);
    using proxies_t = std::tuple<traced<std::decay_t<Args>>...>;
    value_id ids[sizeof...(Args) + 1] = {
        ctx.g.add_argument(static_cast<std::uint32_t>(I), typeid(std::decay_t<Args>))...};
    proxies_t proxies{detail::make_proxy<std::decay_t<Args>>(ctx, args, ids[I])...};
    if constexpr (!std::is_invocable_v<F&, traced<std::decay_t<Args>>&...>) {
      out.reason =
          "the callable cannot be called with traced arguments (does it take an argument by "
          "non-const reference to a concrete type?); write it as a generic lambda";
    } else if constexpr (std::is_reference_v<R>) {
      out.reason = "the callable returns a reference, which a plan cannot produce";
    } else {
      try {
        if constexpr (std::is_void_v<R>) {
          std::apply(s_->fn, proxies);
        } else {
          decltype(auto) result = std::apply(s_->fn, proxies);
          detail::collect<R>(ctx, result, out.recipe);
        }
      } catch (const detail::trace_abort&) {
      } catch (const std::bad_alloc&) {
        throw;
      } catch (const std::exception& ex) {
        if (!ctx.aborted()) {
          out.reason = fmt::format("the body threw {} at trace time: {}",
                                   graph::type_name(typeid(ex)), ex.what());
        }
      } catch (...) {
        if (!ctx.aborted()) out.reason = "the body threw a non-standard exception at trace time";
      }
      if (ctx.aborted()) out.reason = ctx.reason();
      if (out.reason.empty()) {
        std::size_t bad = sizeof...(Args);
        ((std::get<I>(proxies).id() != ids[I] && bad == sizeof...(Args) ? bad = I : bad), ...);
        if (bad != sizeof...(Args)) {
          out.reason = fmt::format(
              "the body assigns to argument {}, which it takes by reference; the plan cannot "
              "write to the caller's arguments",
              bad);
        }
      }
    }
  }

  std::shared_ptr<state> s_;
};

/// Wraps `f` into a jitted function. See `jitted`.
template <class F>
jitted<std::decay_t<F>> jit(F&& f) {
  return jitted<std::decay_t<F>>(std::forward<F>(f));
}

}  // namespace xcs
