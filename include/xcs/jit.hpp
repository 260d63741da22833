// SPDX-License-Identifier: MIT
// xcs::jit: the entry point. call -> signature -> plan cache -> [trace -> graph -> analysis ->
// plan] -> run -> result, or, for a body that reads its values, a staged run.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <stop_token>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "xcs/detail/call_limits.hpp"
#include "xcs/detail/jit_core.hpp"
#include "xcs/detail/record.hpp"
#include "xcs/detail/result.hpp"
#include "xcs/detail/signature.hpp"
#include "xcs/detail/trace_context.hpp"
#include "xcs/op.hpp"
#include "xcs/stats.hpp"
#include "xcs/traced.hpp"

namespace xcs {

template <class F>
class bounded_call;

namespace detail {

std::string unmappable_result(const std::type_info& body_returns,
                              const std::type_info& call_returns);
std::string assigned_argument(std::size_t position);
std::string body_threw(const std::exception_ptr& e);

/// Whether `F` can run traced on `Args` and give the direct call's `R`, by the types alone.
template <class F, class R, class... Args>
constexpr bool traceable() {
  if constexpr (!std::is_invocable_v<F&, traced<std::decay_t<Args>>&...> ||
                std::is_reference_v<R>) {
    return false;
  } else {
    return result_maps<R, std::invoke_result_t<F&, traced<std::decay_t<Args>>&...>>();
  }
}

/// Why `traceable<F, R, Args...>()` is false.
template <class F, class R, class... Args>
std::string static_fallback_reason() {
  if constexpr (!std::is_invocable_v<F&, traced<std::decay_t<Args>>&...>) {
    return "the callable cannot be called with traced arguments (does it take an argument by "
           "non-const reference to a concrete type?); write it as a generic lambda";
  } else if constexpr (std::is_reference_v<R>) {
    return "the callable returns a reference, which a plan cannot produce";
  } else {
    using X = std::invoke_result_t<F&, traced<std::decay_t<Args>>&...>;
    return unmappable_result(typeid(std::remove_cvref_t<X>), typeid(R));
  }
}

/// How a body's run on traced values ended.
struct body_outcome {
  bool finished = false;     ///< it returned, and nothing ended the trace
  std::exception_ptr error;  ///< what it threw (not a trace_abort)
  std::string why;           ///< a reason it cannot become a plan though it finished
};

}  // namespace detail

/// A jitted function: wraps a callable, usually a generic lambda, and runs the independent ops
/// of each call at the same time.
///
/// On the first call with a new signature (decayed argument types plus container sizes) the
/// callable runs on traced values, recording its ops into a graph. If it runs to its end
/// without reading a value, the graph is analyzed and compiled into a plan cached for that
/// signature, and each call runs the plan: every op exactly once, each as soon as its inputs
/// are ready, on the calling thread and the process-wide pool. If it reads a value (an `if`
/// on an op's result, a conversion, a loop over a returned vector), the signature runs
/// staged: the body runs on every call, each op starts as soon as its inputs are ready, and a
/// read waits only for the ops its value depends on. Either way the call returns what the
/// direct call returns and throws what it throws (the exception of the first throwing op in
/// program order).
///
/// When the callable cannot run traced, or the graph has nothing to run at the same time, the
/// call (and later calls with that signature) runs the callable directly;
/// `stats().fallback_reason` says why.
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
    if constexpr (!std::is_invocable_v<F&, Args&&...>) {
      if constexpr (std::is_invocable_v<F&, std::remove_cvref_t<Args>&&...>) {
        static_assert(detail::always_false_v<F>,
                      "xcs::jit: an argument is an lvalue the callable takes by value but cannot "
                      "copy (a std::unique_ptr?); pass std::move(x), or take it by const "
                      "reference");
        return detail::after_misuse<std::invoke_result_t<F&, std::remove_cvref_t<Args>&&...>>();
      } else {
        static_assert(detail::always_false_v<F>,
                      "xcs::jit: the callable cannot be called with these arguments, as the "
                      "direct call could not; check their number and types (or, if an error "
                      "above is in the callable's body, that error)");
        return detail::misuse_value{};
      }
    } else if constexpr ((std::is_array_v<std::remove_reference_t<Args>> || ...)) {
      // A string literal or C array argument is passed on as the pointer it decays to, as a
      // by-value parameter of the body would receive it.
      return (*this)(detail::decay_array(std::forward<Args>(args))...);
    } else if constexpr ((detail::is_trace_input_v<Args> || ...)) {
      return call_traced(std::forward<Args>(args)...);
    } else {
      return call(std::forward<Args>(args)...);
    }
  }

  /// A snapshot of what this function (and its copies) did. Thread-safe.
  xcs::stats stats() const { return s_->core.stats(); }

  /// This function with a deadline: each call of the result must be done within `d` of its
  /// start, or it throws `xcs::deadline_exceeded`. No op starts after the deadline, running
  /// ops are asked to stop (through their `std::stop_token`) and abandoned, and the call
  /// returns at once. A jitted call made inside one of its ops inherits what is left of it.
  /// A fallback call runs the body directly: there the deadline is checked at each op's start
  /// and end. Throws xcs::error for a `d` that is not above zero.
  ///
  ///     std::string a = pipeline.with_deadline(std::chrono::seconds(2))(question);
  template <class Rep, class Period>
  bounded_call<F> with_deadline(std::chrono::duration<Rep, Period> d) const {
    return bounded_call<F>(*this).with_deadline(d);
  }
  /// This function under a stop token: each call of the result throws `xcs::cancelled` when
  /// stop is requested on `t` before it is done, as `with_deadline` does at its deadline.
  bounded_call<F> with_stop_token(std::stop_token t) const {
    return bounded_call<F>(*this).with_stop_token(std::move(t));
  }

  /// A dry run for `args`' signature: traces without running any op (and without touching the
  /// cache) and reports the signature, whether it is cached, the IR listing, the parallel
  /// groups, the critical path and the estimated speedup; for a staged signature, the graph up
  /// to the first read and that read; or the fallback reason.
  template <class... Args>
  std::string explain(const Args&... args) const {
    if constexpr ((std::is_array_v<Args> || ...)) {
      return explain(detail::decay_array(args)...);
    } else {
      detail::trace_context ctx(detail::trace_mode::dry);
      detail::trace_output out;
      bool finished = dry_trace<std::invoke_result_t<F&, const Args&...>>(ctx, out, args...);
      return s_->core.explain(detail::signature::of(args...), ctx, finished ? &out : nullptr);
    }
  }

  /// Graphviz DOT of the graph `args` would trace to; parallel groups are drawn as ranked
  /// clusters. For a staged signature, the graph up to the first read; for a fallback, an
  /// empty graph and a comment with the reason.
  template <class... Args>
  std::string dot(const Args&... args) const {
    if constexpr ((std::is_array_v<Args> || ...)) {
      return dot(detail::decay_array(args)...);
    } else {
      detail::trace_context ctx(detail::trace_mode::dry);
      detail::trace_output out;
      bool finished = dry_trace<std::invoke_result_t<F&, const Args&...>>(ctx, out, args...);
      return detail::jit_core::dot(ctx, finished ? &out : nullptr);
    }
  }

  /// Sets the bound of the plan cache (default 64 signatures). Lowering it drops the least
  /// recently used entries at once.
  void set_cache_capacity(std::size_t n) const { s_->core.set_capacity(n); }

 private:
  struct state;
  /// This function as the callable of one node of an outer body (see call_traced).
  struct nested_call {
    state* s;
    template <class... A>
    auto operator()(const A&... a) const {
      return jitted(s->shared_from_this())(a...);
    }
  };
  struct state : std::enable_shared_from_this<state> {
    explicit state(F f) : fn(std::move(f)), as_node("jitted function", nested_call{this}, {}) {}
    F fn;
    detail::jit_core core;
    /// A call of this function inlined into an outer body read a value: the body branches,
    /// so later calls from outer bodies are nodes of their own (relaxed: a hint).
    std::atomic<bool> reads{false};
    detail::op_state<nested_call> as_node;
  };
  explicit jitted(std::shared_ptr<state> s) noexcept : s_(std::move(s)) {}

  /// Whether a call on `Args` (some traced) may be recorded as a node: the node's result is
  /// the same proxy type that the inlined body returns.
  template <class... Args>
  static constexpr bool nests_as_node() {
    if constexpr (!std::is_invocable_v<F&, const detail::input_type_t<Args>&...>) {
      return false;
    } else {
      using direct = std::invoke_result_t<F&, const detail::input_type_t<Args>&...>;
      if constexpr (std::is_reference_v<direct> || std::is_void_v<direct>) {
        return false;
      } else {
        return std::is_same_v<std::remove_cvref_t<std::invoke_result_t<F&, Args&&...>>,
                              traced<detail::op_result_t<direct>>>;
      }
    }
  }

  /// Called with traced values from an outer body. A body that records only ops is inlined
  /// into the outer trace, so its ops join the outer graph. A body that reads values would
  /// make the outer body wait at each of its reads: once one inlined call has read, the calls
  /// are recorded as nodes, each a whole call of this function that runs (staged) on the pool
  /// while the outer body goes on.
  template <class... Args>
  decltype(auto) call_traced(Args&&... args) const {
    if constexpr (nests_as_node<Args...>()) {
      if (s_->reads.load(std::memory_order_relaxed)) {
        std::shared_ptr<const detail::op_identity> owner(s_, &s_->as_node);
        return detail::record_call(s_->as_node.name, &s_->as_node.fn, std::move(owner), args...);
      }
      detail::trace_context& ctx = detail::context_of_inputs(args...);
      const std::uint64_t before = ctx.reads();
      struct read_check {
        detail::trace_context& ctx;
        std::uint64_t before;
        std::atomic<bool>& reads;
        ~read_check() {
          if (ctx.reads() != before) reads.store(true, std::memory_order_relaxed);
        }
      } check{ctx, before, s_->reads};
      return detail::invoke_callable(s_->fn, std::forward<Args>(args)...);
    } else {
      // Called from a body being traced: the inner body records into the outer trace.
      return detail::invoke_callable(s_->fn, std::forward<Args>(args)...);
    }
  }

  /// A call with plain arguments; counts the ones that end by a deadline or a stop.
  template <class... Args>
  decltype(auto) call(Args&&... args) const {
    try {
      return call_here(std::forward<Args>(args)...);
    } catch (const deadline_exceeded&) {
      s_->core.count_stopped(true);
      throw;
    } catch (const cancelled&) {
      s_->core.count_stopped(false);
      throw;
    }
  }

  template <class... Args>
  decltype(auto) call_here(Args&&... args) const {
    using R = std::invoke_result_t<F&, Args&&...>;
    std::optional<detail::untraced_scope> outside;
    if (auto* ctx = detail::trace_context::current()) {
      // Called with plain values inside a body: the call runs as it would directly, once, in
      // program order (a recording trace goes staged for it).
      ctx->run_outside("a jitted function", __builtin_return_address(0));
      outside.emplace();
    }
    detail::jit_core& core = s_->core;
    const detail::signature sig = detail::signature::of(args...);
    detail::call_ticket t = core.begin(sig);
    if constexpr (detail::traceable<F, R, Args...>()) {
      const void* ptrs[sizeof...(Args) + 1] = {std::addressof(args)...};
      const std::span<const void* const> arg_ptrs(ptrs, sizeof...(Args));
      if (t.kind == detail::call_kind::plan) {
        detail::finished_run r = core.run_plan(t, arg_ptrs, detail::copier_of<Args...>());
        return detail::build_result<R>(r.recipe(), r);
      }
      if (t.kind == detail::call_kind::trace || t.kind == detail::call_kind::staged) {
        return run_traced<R>(t, sig, arg_ptrs, std::forward<Args>(args)...);
      }
    } else {
      if (t.kind == detail::call_kind::trace) {
        core.publish_fallback(t, sig, detail::fallback_cause::untraceable,
                              detail::static_fallback_reason<F, R, Args...>());
      }
    }
    core.count_direct(t);
    return detail::invoke_callable(s_->fn, std::forward<Args>(args)...);
  }

  /// The first call of a signature (recording; it goes staged at its first read), or a call
  /// of a staged signature (staged from the start).
  template <class R, class... Args>
  R run_traced(detail::call_ticket& t, const detail::signature& sig,
               std::span<const void* const> arg_ptrs, Args&&... args) const {
    detail::jit_core& core = s_->core;
    detail::staged_call staged(core, t, sig, arg_ptrs, detail::copier_of<Args...>());
    detail::trace_context ctx(t.kind == detail::call_kind::staged ? detail::trace_mode::staged
                                                                  : detail::trace_mode::recording,
                              &staged);
    detail::result_recipe recipe;
    detail::trace_buffers_lease buffers(staged, ctx.ir(), recipe);
    detail::body_outcome o = run_body<R>(ctx, recipe, std::index_sequence_for<Args...>{}, args...);
    if (!ctx.staged()) {
      // Nothing ran: compile the trace, or fall back.
      if (o.finished && o.why.empty()) {
        core.publish_trace(t, sig, detail::trace_output{std::move(ctx.ir()), std::move(recipe)});
        if (t.kind == detail::call_kind::plan) {
          detail::finished_run r = core.run_plan(t, arg_ptrs, detail::copier_of<Args...>());
          return detail::build_result<R>(r.recipe(), r);
        }
      } else {
        std::string why = !o.why.empty() ? std::move(o.why)
                          : o.error      ? detail::body_threw(o.error)
                                         : ctx.reason();
        // No reason: an allocation failed (body_threw says nothing for std::bad_alloc, so as
        // not to allocate), and a later call traces again.
        const detail::fallback_cause cause = why.empty() ? detail::fallback_cause::out_of_memory
                                                         : detail::fallback_cause::untraceable;
        core.publish_fallback(t, sig, cause, std::move(why));
      }
      core.count_direct(t);
      return detail::invoke_callable(s_->fn, std::forward<Args>(args)...);
    }
    // Staged: ops ran, so the call cannot fall back. The direct call would have run every op
    // recorded before the body's end, so they all run; an op's exception precedes whatever
    // the body threw after it in program order.
    std::exception_ptr op_error = ctx.drain();
    if (op_error) std::rethrow_exception(op_error);
    if (o.error) std::rethrow_exception(o.error);
    if (!o.finished) throw error("xcs: " + ctx.reason());
    if (!o.why.empty()) throw error("xcs: " + o.why);
    staged.finish_fallback();
    recipe.plan_moves(ctx.ir());
    detail::finished_run r = staged.values(recipe);
    return detail::build_result<R>(recipe, r);
  }

  /// Runs the body on proxies of `args` in `ctx`, collecting its result into `recipe`.
  template <class R, std::size_t... I, class... Args>
  detail::body_outcome run_body(detail::trace_context& ctx, detail::result_recipe& recipe,
                                std::index_sequence<I...>, const Args&... args) const {
    detail::body_outcome o;
    detail::trace_context::scope scope(ctx);
    try {
      detail::value_id ids[sizeof...(Args) + 1] = {
          ctx.ir().add_argument(static_cast<std::uint32_t>(I), typeid(std::decay_t<Args>))...};
      std::tuple<traced<std::decay_t<Args>>...> proxies{
          detail::make_proxy<std::decay_t<Args>>(ctx, args, ids[I])...};
      if constexpr (std::is_void_v<R>) {
        std::apply(s_->fn, proxies);
      } else {
        decltype(auto) result = std::apply(s_->fn, proxies);
        detail::collect<R>(ctx, result, recipe);
      }
      o.finished = !ctx.aborted();
      // A body that assigns to an argument it takes by reference writes the caller's value.
      std::size_t bad = sizeof...(Args);
      ((detail::traced_access::id(std::get<I>(proxies)) != ids[I] && bad == sizeof...(Args)
            ? bad = I
            : bad),
       ...);
      if (bad != sizeof...(Args)) o.why = detail::assigned_argument(bad);
    } catch (const detail::trace_abort&) {
    } catch (...) {
      if (!ctx.aborted()) o.error = std::current_exception();
    }
    return o;
  }

  /// A trace that runs nothing, for explain() and dot(); true if it ran to its end.
  template <class R, class... Args>
  bool dry_trace(detail::trace_context& ctx, detail::trace_output& out, const Args&... args) const {
    if constexpr (!detail::traceable<F, R, Args...>()) {
      ctx.fail(detail::static_fallback_reason<F, R, Args...>());
      return false;
    } else {
      detail::body_outcome o =
          run_body<R>(ctx, out.recipe, std::index_sequence_for<Args...>{}, args...);
      if (o.error) ctx.fail(detail::body_threw(o.error));
      if (!o.why.empty()) ctx.fail(std::move(o.why));
      if (!o.finished || !o.why.empty()) return false;
      out.ir = std::move(ctx.ir());
      return true;
    }
  }

  std::shared_ptr<state> s_;
};

/// A jitted function with a deadline and/or a stop token for each of its calls (see
/// `jitted::with_deadline` and `jitted::with_stop_token`). Takes the function's arguments and
/// returns what it returns. Copies share the function; thread-safe.
template <class F>
class bounded_call {
 public:
  explicit bounded_call(jitted<F> f) : f_(std::move(f)) {}

  /// The same with a deadline of `d` from each call's start (the shorter one, if it has one).
  template <class Rep, class Period>
  bounded_call with_deadline(std::chrono::duration<Rep, Period> d) const {
    if (!(d > d.zero())) {
      throw error(
          "xcs: with_deadline: the deadline must be above zero (got " +
          detail::describe_ns(std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()) +
          ")");
    }
    bounded_call b = *this;
    // Longer than a century is no deadline (and would overflow the clock).
    constexpr auto forever = std::chrono::hours(24 * 365 * 100);
    const auto ns = d >= forever ? std::chrono::nanoseconds(forever)
                                 : std::chrono::duration_cast<std::chrono::nanoseconds>(d);
    b.timeout_ = b.timeout_ ? std::min(*b.timeout_, ns) : ns;
    return b;
  }
  /// The same under stop token `t` (in place of one it had).
  bounded_call with_stop_token(std::stop_token t) const {
    bounded_call b = *this;
    b.stop_ = std::move(t);
    return b;
  }

  /// Calls the function within the limits, and within those of the call this thread works
  /// for (an op of a bounded call that makes a jitted call).
  template <class... Args>
  decltype(auto) operator()(Args&&... args) const {
    const detail::call_limits* outer = detail::call_limits::current();
    detail::call_limits mine;
    if (timeout_) mine.deadline = std::chrono::steady_clock::now() + *timeout_;
    if (outer && outer->deadline < mine.deadline) mine.deadline = outer->deadline;
    detail::joined_stop stop(stop_, outer ? outer->stop : std::stop_token());
    mine.stop = stop.token();
    detail::limits_scope scope(&mine);
    return f_(std::forward<Args>(args)...);
  }

 private:
  jitted<F> f_;
  std::optional<std::chrono::nanoseconds> timeout_;
  std::stop_token stop_;
};

/// Wraps `f` into a jitted function. See `jitted`.
template <class F>
jitted<std::decay_t<F>> jit(F&& f) {
  return jitted<std::decay_t<F>>(std::forward<F>(f));
}

}  // namespace xcs
