// SPDX-License-Identifier: MIT
// xcs::op: a unit of work the tracer records as one node.
#pragma once

#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>

#include "xcs/cache.hpp"
#include "xcs/detail/op_runtime.hpp"
#include "xcs/detail/record.hpp"
#include "xcs/detail/trace_context.hpp"
#include "xcs/error.hpp"
#include "xcs/rate_limit.hpp"
#include "xcs/traced.hpp"

namespace xcs {

/// Hint for `xcs::op`: the op blocks (network, disk, sleep), so it runs on the blocking lane,
/// a set of threads beyond the CPU workers, from its first call. Without the hint xcs finds
/// out by itself after the first instance has sat in the op for about a millisecond without
/// using CPU. See docs/design.md, "Blocking ops".
struct blocking_t {
  explicit blocking_t() = default;
};
inline constexpr blocking_t blocking{};

/// Option for `xcs::op`: at most `n` instances of the op run at once, across every jitted
/// function and thread (copies of the op share the bound). Real APIs cap concurrent requests.
/// A plan's node that finds every slot taken parks without holding a thread; a direct (plain)
/// call blocks its own thread until a slot frees.
struct max_concurrency_t {
  std::uint32_t n;
};
inline max_concurrency_t max_concurrency(std::uint32_t n) {
  if (n == 0) throw error("xcs::max_concurrency: the bound must be at least 1");
  return {n};
}

/// Option for `xcs::op` and `xcs::async_op`: an instance that has not finished `d` after it
/// started fails with `xcs::timeout_error`. Stop is requested on its token, and the call does
/// not wait for it: its late result or exception is discarded (an async op's late completion
/// has no effect). A direct call (and so a fallback call) runs the op on its own thread and
/// cannot leave it: there stop is requested at the timeout, and an instance that returns after
/// it fails with `xcs::timeout_error` when it returns. `d` must be above zero (checked when
/// the op is made).
struct timeout_t {
  std::int64_t ns;
};
template <class Rep, class Period>
timeout_t timeout(std::chrono::duration<Rep, Period> d) {
  return {std::chrono::duration_cast<std::chrono::nanoseconds>(d).count()};
}

/// Option: a failed instance runs again, up to `max_attempts` runs in all. The wait before
/// attempt k+1 is uniform over [0, first_backoff * 2^(k-1)] (full jitter), capped at
/// 30 * first_backoff, and holds no thread. No attempt starts after the call's deadline, and
/// xcs::cancelled, xcs::deadline_exceeded and failures `xcs::retry_if` rejects are not
/// retried. After the last attempt the call sees the last exception (the same object).
struct retry_t {
  std::uint32_t max_attempts;
  std::int64_t first_backoff_ns;
};
template <class Rep, class Period>
retry_t retry(unsigned max_attempts, std::chrono::duration<Rep, Period> first_backoff) {
  return {max_attempts,
          std::chrono::duration_cast<std::chrono::nanoseconds>(first_backoff).count()};
}

/// Option: which failures `xcs::retry` retries: `pred(const std::exception_ptr&)` says yes.
struct retry_if_t {
  std::function<bool(const std::exception_ptr&)> pred;
};
template <class Pred>
retry_if_t retry_if(Pred pred) {
  return {std::function<bool(const std::exception_ptr&)>(std::move(pred))};
}

/// Option: each instance takes a token of `limiter` before it starts (again for each retry);
/// a node waiting for tokens holds no thread, and nodes of one call are served in program
/// order. A direct call waits on its own thread. See `xcs::rate_limiter`.
struct rate_limit_t {
  rate_limiter limiter;
};
/// The same, taking `weight(inputs...)` tokens (a double, at most the limiter's burst) per
/// instance: token-per-minute budgets.
template <class W>
struct weighted_rate_limit_t {
  rate_limiter limiter;
  W weight;
};
inline rate_limit_t rate_limit(rate_limiter limiter) { return {std::move(limiter)}; }
template <class W>
weighted_rate_limit_t<W> rate_limit(rate_limiter limiter, W weight) {
  return {std::move(limiter), std::move(weight)};
}

namespace detail {
/// Whether an op's callable takes arguments `A...` at all: as they are (plain ones), or as
/// their values, const or not (a callable or parameter that is not const has its own message).
/// An op call that fails this fails at the caller's line.
template <class Fn, class... A>
concept op_takes_arguments = (!(is_trace_input_v<A> || ...) &&
                              detail::op_invocable_v<Fn&, A&&...>) ||
                             detail::op_invocable_v<Fn&, input_type_t<A>&...> ||
                             detail::op_invocable_v<Fn&, input_type_t<A>&&...>;

/// The result type of an op call that `op_takes_arguments` allows, decayed.
template <class Fn, class... A>
using loose_op_result_t =
    std::decay_t<typename std::conditional_t<op_invocable_v<Fn&, input_type_t<A>&...>,
                                             op_call_result<Fn&, input_type_t<A>&...>,
                                             op_call_result<Fn&, input_type_t<A>&&...>>::type>;

// Misuses of an op. Each is a function keyed on the callable alone, so that the plain and the
// traced run of one body (which call the op with different argument types) report it once.
template <class Fn>
auto op_not_const() {
  static_assert(always_false_v<Fn>,
                "xcs::op: the op's callable is not callable as const (a `mutable` lambda, or a "
                "non-const operator()); ops may run on several threads at once, so make it const "
                "and keep its state behind a mutex or in an atomic");
}
template <class Fn>
auto op_takes_non_const_reference() {
  static_assert(always_false_v<Fn>,
                "xcs::op: the op takes an argument by non-const reference; an op receives its "
                "inputs as const T&, so take them by value or by const reference");
}

template <class T>
struct is_weighted_rate_limit : std::false_type {};
template <class W>
struct is_weighted_rate_limit<weighted_rate_limit_t<W>> : std::true_type {
  using weight = W;
};

template <class T>
inline constexpr bool is_op_option_v =
    std::is_same_v<T, blocking_t> || std::is_same_v<T, max_concurrency_t> ||
    std::is_same_v<T, timeout_t> || std::is_same_v<T, retry_t> || std::is_same_v<T, retry_if_t> ||
    std::is_same_v<T, rate_limit_t> || is_weighted_rate_limit<T>::value ||
    is_cache_option<T>::value || std::is_same_v<T, cache_version_t>;

/// The codec of an op's xcs::cache option, or void (not cached); a version without a cache is
/// a mistake.
template <class... Options>
struct cache_codec {
  using type = void;
};
template <class O, class... Rest>
struct cache_codec<O, Rest...> {
  using type = typename std::conditional_t<is_cache_option<O>::value, is_cache_option<O>,
                                           cache_codec<Rest...>>::type;
};
template <class... Options>
struct checked_cache_codec {
  static constexpr bool cached = (is_cache_option<Options>::value || ...);
  static_assert(cached || !(std::is_same_v<Options, cache_version_t> || ...),
                "xcs::cache_version: applies only beside xcs::cache(store)");
  using type = typename cache_codec<Options...>::type;
};
template <class... Options>
using cache_codec_t = typename checked_cache_codec<Options...>::type;

/// The weight function among an op's options, or void.
template <class... Options>
struct weight_of {
  using weight = void;
};
template <class O, class... Rest>
struct weight_of<O, Rest...> {
  using weight = typename std::conditional_t<is_weighted_rate_limit<O>::value,
                                             is_weighted_rate_limit<O>, weight_of<Rest...>>::weight;
};
template <class... Options>
using weight_of_t = typename weight_of<Options...>::weight;

/// A direct call of op `p`, past its first checks: through its cache if `Codec` is not void
/// (the key: `a...`; a hit returns a copy and takes no tokens, no permit and no attempt), then
/// `once` (one attempt: tokens, permit, the call) as often as its retry policy says; checks
/// `limits` at the end. `R`: what the call returns.
template <class Codec, class R, class Once, class... A>
R direct_call(const op_runtime& p, const call_limits* limits, Once& once, const A&... a) {
  if constexpr (!std::is_void_v<Codec>) {
    if constexpr (Codec::template accepts<R, A...>()) {
      R r = cached_call<R>(
          p, limits, result_codec_of<Codec, R>(),
          [&](std::string& key) { (Codec::append_key(key, a), ...); },
          [&] { return direct_attempts(p, limits, once); });
      if (limits) limits->check_op(p.name);
      return r;
    } else {
      return after_misuse<R>();
    }
  } else if constexpr (std::is_void_v<R>) {
    direct_attempts(p, limits, once);
    if (limits) limits->check_op(p.name);
  } else if constexpr (std::is_reference_v<R>) {
    R r = direct_attempts(p, limits, once);
    if (limits) limits->check_op(p.name);
    return static_cast<R>(r);
  } else {
    R r = direct_attempts(p, limits, once);
    if (limits) limits->check_op(p.name);
    return r;
  }
}

/// The options of one op, gathered before its runtime state is made.
struct op_options {
  bool blocking = false;
  std::uint32_t max_concurrency = 0;
  std::int64_t timeout_ns = 0;
  bool has_timeout = false;
  std::uint32_t max_attempts = 1;
  std::int64_t first_backoff_ns = 0;
  std::function<bool(const std::exception_ptr&)> retry_if;
  std::optional<rate_limiter> limiter;
  std::shared_ptr<const void> weight;  ///< the weight function, type-erased
  std::shared_ptr<cache_store> cache;
  std::string cache_version;
  void apply(blocking_t) { blocking = true; }
  void apply(max_concurrency_t m) { max_concurrency = m.n; }
  void apply(timeout_t t) {
    timeout_ns = t.ns;
    has_timeout = true;
  }
  void apply(retry_t r) {
    max_attempts = r.max_attempts;
    first_backoff_ns = r.first_backoff_ns;
  }
  void apply(retry_if_t r) { retry_if = std::move(r.pred); }
  void apply(rate_limit_t r) { limiter = std::move(r.limiter); }
  template <class W>
  void apply(weighted_rate_limit_t<W> r) {
    limiter = std::move(r.limiter);
    weight = std::make_shared<const W>(std::move(r.weight));
  }
  template <class Codec>
  void apply(basic_cache_t<Codec> c) {
    cache = c.store.shared_store();
  }
  void apply(cache_version_t v) { cache_version = std::move(v.version); }
  /// The policy these options make (null if none), checked: throws xcs::error naming op
  /// `name` and the bad value.
  std::unique_ptr<const op_policy> policy(const std::string& name) const;
};

/// An op's callable beside its runtime state (and identity), so that a graph node keeps both alive.
template <class Fn>
struct op_state final : op_runtime {
  op_state(std::string op_name, Fn f, const op_options& o)
      : op_runtime(op_name, o.blocking, o.max_concurrency, false, o.policy(op_name)),
        fn(std::move(f)),
        weight(o.weight) {}
  Fn fn;
  std::shared_ptr<const void> weight;  // keeps policy->weight alive
};

/// The state of an op (op_state or async_op_state) made from `options`, applied in order.
template <class State, class Fn, class... Options>
std::shared_ptr<State> make_op_state(std::string name, Fn fn, Options... options) {
  op_options o;
  (o.apply(options), ...);
  return std::make_shared<State>(std::move(name), std::move(fn), o);
}

/// The tokens a direct call of `op` takes: its weight (a `Weight`) of the arguments, or 1.
template <class Weight, class... A>
double direct_tokens(const op_runtime& op, const A&... a) {
  if constexpr (std::is_void_v<Weight>) {
    return 1.0;
  } else {
    return static_cast<double>(
        invoke_callable(*static_cast<const Weight*>(op.policy->weight), a...));
  }
}

}  // namespace detail

/// An op: a callable the tracer records instead of running. Called with plain values it just
/// calls through. Called with traced values (inside a jitted body being traced) it records a
/// node and returns a `traced<R>` of its result type, or a `traced<void>`.
///
/// While a plan runs, instances of one op may run on several threads at once, so the callable
/// must be safe to call concurrently. It receives its inputs as `const T&`.
/// Copies share one state (name, hints and statistics). Thread-safe. `Weight`: the type of its
/// rate-limit weight function, or void; `Codec`: the codec of its xcs::cache option, or void.
template <class Fn, class Weight = void, class Codec = void>
class op_fn {
 public:
  template <class... Options>
  requires(detail::is_op_option_v<Options>&&...) op_fn(std::string name, Fn fn, Options... options)
      : state_(detail::make_op_state<detail::op_state<Fn>>(std::move(name), std::move(fn),
                                                           options...)) {}

  template <class... A>
  requires detail::op_takes_arguments<Fn, A...>
  decltype(auto) operator()(A&&... a) const {
    if constexpr ((detail::is_trace_input_v<A> || ...)) {
      if constexpr (detail::op_invocable_v<const Fn&, const detail::input_type_t<A>&...>) {
        return detail::record_call<Weight, Codec>(state_->name, &state_->fn, state_, a...);
      } else {
        if constexpr (detail::op_invocable_v<Fn&, const detail::input_type_t<A>&...>) {
          detail::op_not_const<Fn>();
        } else {
          detail::op_takes_non_const_reference<Fn>();
        }
        return detail::after_misuse<traced<detail::loose_op_result_t<Fn, A...>>>();
      }
    } else if constexpr (!detail::op_invocable_v<Fn&, A&&...>) {
      // A const or temporary argument where the op takes a non-const reference.
      detail::op_takes_non_const_reference<Fn>();
      return detail::after_misuse<detail::loose_op_result_t<Fn, A...>>();
    } else {
      std::optional<detail::untraced_scope> outside;
      if (auto* ctx = detail::trace_context::current()) {
        // Plain arguments inside a body (say, a value the body just read): the op runs here
        // and now, as in the direct call; a recording trace goes staged for it.
        ctx->run_outside("op '" + state_->name + "'", __builtin_return_address(0));
        outside.emplace();
      }
      // A call with a deadline or stop token (a fallback runs its ops here) checks it at each
      // op's start and end.
      const detail::call_limits* limits = detail::call_limits::current();
      if (!limits && !state_->policy && !state_->limit) {
        // Nothing to apply around it: a plain call.
        return detail::invoke_with_stop(state_->fn, std::forward<A>(a)...);
      }
      return call_with_policy<A...>(limits, std::forward<A>(a)...);
    }
  }

  const std::string& name() const noexcept { return state_->name; }
  bool blocking() const noexcept { return state_->blocking_hint; }
  /// The concurrency bound, or 0 if there is none.
  std::uint32_t max_concurrency() const noexcept { return detail::concurrency_bound(*state_); }
  /// The most instances that ran at once so far (0 without a bound).
  std::uint32_t peak_concurrency() const noexcept { return detail::concurrency_peak(*state_); }

 private:
  /// A direct call with something to apply around it: the call's limits (checked at the op's
  /// start), the op's policy, or its concurrency bound.
  template <class... A>
  decltype(auto) call_with_policy(const detail::call_limits* limits, A&&... a) const {
    if (limits) limits->check_op(state_->name);
    using R = detail::op_call_result_t<Fn&, A&&...>;
    auto once = [&]() -> R {
      detail::direct_instance instance(*state_, limits,
                                       detail::direct_tokens<Weight>(*state_, a...));
      detail::direct_timeout timeout(*state_);
      // Whatever the op's end, past its timeout the instance failed with timeout_error.
      return timeout.call([&]() -> R {
        if constexpr (detail::op_invocable_v<Fn&, A&...>) {
          // Retried: each attempt gets the arguments as given, none moved from.
          if (state_->policy && state_->policy->max_attempts > 1) {
            return detail::invoke_with_stop(state_->fn, a...);
          }
        }
        return detail::invoke_with_stop(state_->fn, std::forward<A>(a)...);
      });
    };
    return detail::direct_call<Codec, R>(*state_, limits, once, a...);
  }

  std::shared_ptr<detail::op_state<Fn>> state_;
};

/// Makes an op named `name`. Names show in stats, explain() and graph dumps. Options:
/// `xcs::blocking`, `xcs::max_concurrency(n)`, `xcs::timeout(d)`, `xcs::retry(n, backoff)`,
/// `xcs::retry_if(pred)`, `xcs::rate_limit(limiter[, weight])`, `xcs::cache(store)` and
/// `xcs::cache_version(v)`.
///
///     auto summarize = xcs::op("summarize", [](const std::string& d) { return call_llm(d); });
///     auto fetch = xcs::op("fetch", http_get, xcs::blocking, xcs::max_concurrency(4));
template <class Fn, class... Options>
requires(detail::is_op_option_v<Options>&&...) auto op(std::string name, Fn&& fn,
                                                       Options... options) {
  return op_fn<std::decay_t<Fn>, detail::weight_of_t<Options...>,
               detail::cache_codec_t<Options...>>(std::move(name), std::forward<Fn>(fn),
                                                  options...);
}
/// An unnamed op; it shows as "op".
template <class Fn>
requires(!std::is_convertible_v<Fn, std::string>) op_fn<std::decay_t<Fn>> op(Fn&& fn) {
  return op_fn<std::decay_t<Fn>>("op", std::forward<Fn>(fn));
}

}  // namespace xcs
