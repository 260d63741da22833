// SPDX-License-Identifier: MIT
// xcs::op: a unit of work the tracer records as one node.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "xcs/detail/record.hpp"
#include "xcs/detail/trace_context.hpp"
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

namespace detail {

template <class Fn>
struct op_state final : op_state_base {
  op_state(std::string name, Fn f) : op_state_base(std::move(name)), fn(std::move(f)) {}
  Fn fn;
};

}  // namespace detail

/// An op: a callable the tracer records instead of running. Called with plain values it just
/// calls through. Called with traced values (inside a jitted body being traced) it records a
/// node and returns a `traced<R>` of its result type, or a `traced<void>`.
///
/// While a plan runs, instances of one op may run on several threads at once, so the callable
/// must be safe to call concurrently. It receives its inputs as `const T&`.
/// Copies share one state (name, hints and statistics). Thread-safe.
template <class Fn>
class op_fn {
 public:
  op_fn(std::string name, Fn fn, bool blocking_hint = false)
      : state_(std::make_shared<detail::op_state<Fn>>(std::move(name), std::move(fn))) {
    state_->blocking_hint = blocking_hint;
  }

  template <class... A>
  decltype(auto) operator()(A&&... a) const {
    if constexpr ((detail::is_trace_input_v<A> || ...)) {
      return detail::record_call(state_->name, &state_->fn, state_, a...);
    } else {
      if (auto* ctx = detail::trace_context::current()) {
        ctx->abort("op '" + state_->name +
                   "' was called with only plain arguments while tracing; it would run at "
                   "trace time instead of once per call");
      }
      return std::invoke(state_->fn, std::forward<A>(a)...);
    }
  }

  const std::string& name() const noexcept { return state_->name; }
  bool blocking() const noexcept { return state_->blocking_hint; }

 private:
  std::shared_ptr<detail::op_state<Fn>> state_;
};

/// Makes an op named `name`. Names show in stats, explain() and graph dumps.
///
///     auto summarize = xcs::op("summarize", [](const std::string& d) { return call_llm(d); });
///     auto fetch = xcs::op("fetch", http_get, xcs::blocking);
template <class Fn>
op_fn<std::decay_t<Fn>> op(std::string name, Fn&& fn) {
  return {std::move(name), std::forward<Fn>(fn)};
}
template <class Fn>
op_fn<std::decay_t<Fn>> op(std::string name, Fn&& fn, blocking_t) {
  return {std::move(name), std::forward<Fn>(fn), true};
}
/// An unnamed op; it shows as "op".
template <class Fn>
  requires(!std::is_convertible_v<Fn, std::string>)
op_fn<std::decay_t<Fn>> op(Fn&& fn) {
  return {"op", std::forward<Fn>(fn)};
}

}  // namespace xcs
