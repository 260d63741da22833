// SPDX-License-Identifier: MIT
// xcs::batch_op: an op of one input whose calls are sent to its function together, in batches
// that follow the graph (Haxl's data sources, DataLoader's batch function).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "xcs/async_op.hpp"
#include "xcs/detail/batch.hpp"
#include "xcs/detail/batch_send.hpp"
#include "xcs/op.hpp"

namespace xcs {

/// Option for `xcs::batch_op`: at most `n` calls go to the batch function at once; more calls
/// ready together are split into batches of `n` (in program order). Throws xcs::error for 0.
struct max_batch_t {
  std::size_t n;
};
inline max_batch_t max_batch(std::size_t n) {
  if (n == 0) throw error("xcs::max_batch: the cap must be at least 1");
  return {n};
}

/// Option for `xcs::batch_op`: a batch may wait up to `d` for calls of the same op from other
/// calls (of any jitted function, on any thread, and direct calls), and goes as one batch with
/// them, at the end of the window or as soon as it holds `xcs::max_batch` calls. For servers
/// that see many small concurrent calls. Nothing waits without it. `d` must be above zero.
struct batch_window_t {
  std::int64_t ns;
};
template <class Rep, class Period>
batch_window_t batch_window(std::chrono::duration<Rep, Period> d) {
  const auto ns = std::chrono::duration_cast<std::chrono::nanoseconds>(d).count();
  if (ns <= 0) throw error("xcs::batch_window: the window must be above zero");
  return {ns};
}

namespace detail {

template <class T>
inline constexpr bool is_batch_option_v =
    is_op_option_v<T> || std::is_same_v<T, max_batch_t> || std::is_same_v<T, batch_window_t>;

template <class V>
struct vector_element {
  using type = undeduced;
};
template <class T>
struct vector_element<std::vector<T>> {
  using type = T;
};
template <class V>
using vector_element_t = typename vector_element<std::remove_cvref_t<V>>::type;

/// A batch function's input and result types and whether it is async, read off its signature:
/// `std::vector<Out>(const std::vector<In>&)` or `void(const std::vector<In>&,
/// xcs::completion<std::vector<Out>>)`.
template <class... P>
struct batch_params {
  using in = undeduced;
  using out = undeduced;
  static constexpr bool async = false;
};
template <class Ret, class P0>
struct batch_params<Ret, P0> {
  using in = vector_element_t<P0>;
  using out = vector_element_t<Ret>;
  static constexpr bool async = false;
};
template <class Ret, class P0, class P1>
struct batch_params<Ret, P0, P1> {
  using in = vector_element_t<P0>;
  using out = vector_element_t<typename completion_of<std::remove_cvref_t<P1>>::type>;
  static constexpr bool async = true;
};

template <class F, class = void>
struct batch_signature : batch_params<> {};
template <class Ret, class... P>
struct batch_signature<Ret (*)(P...)> : batch_params<Ret, P...> {};
template <class Ret, class... P>
struct batch_signature<Ret (*)(P...) noexcept> : batch_params<Ret, P...> {};
template <class Ret, class C, class... P>
struct batch_signature<Ret (C::*)(P...) const> : batch_params<Ret, P...> {};
template <class Ret, class C, class... P>
struct batch_signature<Ret (C::*)(P...) const noexcept> : batch_params<Ret, P...> {};
template <class Ret, class C, class... P>
struct batch_signature<Ret (C::*)(P...)> : batch_params<Ret, P...> {};
template <class F>
struct batch_signature<F, std::void_t<decltype(&F::operator())>>
    : batch_signature<decltype(&F::operator())> {};

/// The kernel of a batch op's node. The engine never starts it as an async op: it gathers the
/// node into a batch (run_batch.cpp); the start is there for the engine's async bookkeeping.
template <class Out>
struct batch_item_kernel {
  static void start(const void*, const void* const*, async_slot& s) noexcept {
    s.start_error = batch_not_gathered(*s.op);
  }
  static inline const kernel value = make_kernel<Out>(nullptr, &start);
};

/// A batch op's state: the runtime state of its calls (name, statistics; no limit and no
/// policy, so the engine applies none per call), the batch function, and `per_batch`, the
/// runtime state that carries the options, applied to each batch as in a direct call.
template <class Fn, class In, class Out, bool Async, class Weight>
struct batch_op_state final : op_runtime, batch_sender {
  batch_op_state(const std::string& op_name, Fn f, const op_options& o, std::size_t cap,
                 std::uint64_t window_ns)
      : op_runtime(op_name, o.blocking, 0, true),
        batch_sender(cap, !Async, window_ns),
        fn(std::move(f)),
        weight(o.weight),
        per_batch(op_name, o.blocking, o.max_concurrency, Async, o.policy(op_name)) {
    batch = this;
  }

  void send_now(std::span<const batch_item> items, std::uint32_t& deduplicated) noexcept override {
    std::optional<batch_calls<In, Out>> calls;
    try {
      calls.emplace(items);
    } catch (...) {
      batch_calls<In, Out>::fail_items(items, std::current_exception());
      return;
    }
    deduplicated = calls->deduplicated();
    if constexpr (Async) {
      start(std::move(*calls));
    } else {
      try {
        std::vector<Out> r = call(calls->inputs());
        calls->deliver(r, *this);
      } catch (...) {
        calls->fail(std::current_exception());
      }
    }
  }

  /// One batch through the sync function, with the options applied as in a direct call of an
  /// op: tokens and a permit taken on this thread, the timeout checked at the return, retries.
  std::vector<Out> call(const std::vector<In>& inputs) const {
    const call_limits* limits = call_limits::current();
    if (!limits && !per_batch.policy && !per_batch.limit) return invoke_callable(fn, inputs);
    if (limits) limits->check_op(name);
    auto once = [&]() -> std::vector<Out> {
      direct_instance instance(per_batch, limits, tokens(inputs));
      direct_timeout timeout(per_batch);
      std::vector<Out> r;
      try {
        r = invoke_callable(fn, inputs);
      } catch (...) {
        timeout.check();
        throw;
      }
      timeout.check();
      return r;
    };
    std::vector<Out> r = direct_attempts(per_batch, limits, once);
    if (limits) limits->check_op(name);
    return r;
  }

  /// The tokens one batch takes: its weight function over the inputs sent, or 1.
  double tokens(const std::vector<In>& inputs) const {
    if constexpr (std::is_void_v<Weight>) {
      return 1.0;
    } else {
      return static_cast<double>(
          invoke_callable(*static_cast<const Weight*>(per_batch.policy->weight), inputs));
    }
  }

  /// An async batch in flight: its calls, its completion's slot and result, and the permit
  /// and tokens it holds until the completion.
  struct flight final : async_sink {
    explicit flight(batch_calls<In, Out>&& c) : calls(std::move(c)) {}
    batch_calls<In, Out> calls;
    async_slot slot;
    direct_result<std::vector<Out>> result;
    std::optional<direct_instance> instance;
    const batch_op_state* op = nullptr;
    void settle(async_slot& s) noexcept override {
      // The permit goes back first: once the calls have their outcomes, the op may be gone.
      instance.reset();
      if (s.error()) {
        if (s.has_value) result.get()->~vector();
        calls.fail(s.error());
      } else {
        calls.deliver(*result.get(), *op);
        result.get()->~vector();
      }
      delete this;
    }
  };

  /// Starts one async batch; its completion delivers the results, on whichever thread calls it.
  void start(batch_calls<In, Out>&& calls) const noexcept {
    flight* f = nullptr;
    try {
      f = new flight(std::move(calls));
    } catch (...) {
      calls.fail(std::current_exception());
      return;
    }
    f->op = this;
    f->slot.prepare(*f, const_cast<batch_op_state*>(this), f->result.bytes, 0, 0);
    bool made = false;  // the completion exists (and arrives by itself, called or dropped)
    try {
      const call_limits* limits = call_limits::current();
      if (limits) limits->check_op(name);
      f->instance.emplace(per_batch, limits, tokens(f->calls.inputs()));
      made = true;
      invoke_callable(fn, f->calls.inputs(), completion_access::make<std::vector<Out>>(f->slot));
    } catch (...) {
      f->slot.start_error = std::current_exception();
      if (!made) f->slot.arrive();  // the completion's arrival, for one that never was
    }
    if (f->slot.arrive()) f->settle(f->slot);
  }

  Fn fn;
  std::shared_ptr<const void> weight;  // keeps per_batch.policy->weight alive
  /// Mutable: its limit and policy are taken (tokens, permits) by const sends.
  mutable op_runtime per_batch;
};

}  // namespace detail

/// A batch op: called like an op of one input `In` and returning `Out`, but its calls reach
/// its function together, as one `std::vector<In>`, and it returns one `Out` per input, in
/// order. In a plan, the calls that do not depend on each other and sit at the same
/// dependency level go in one batch (split by xcs::max_batch); in a staged call, the calls
/// recorded since the body last waited for a value. Called directly with a plain value it
/// sends a batch of one. Equal inputs of one batch (if `In` has `==` and `std::hash`) are sent
/// once. See docs/api.md, "Batched ops". Copies share one state. Thread-safe.
template <class Fn, class In, class Out, bool Async, class Weight>
class batch_op_fn {
  using state = detail::batch_op_state<Fn, In, Out, Async, Weight>;

 public:
  batch_op_fn(std::string name, Fn fn, const detail::op_options& o, std::size_t cap,
              std::uint64_t window_ns)
      : state_(std::make_shared<state>(name, std::move(fn), o, cap, window_ns)) {}

  /// Traced input: records a node. Plain input: sends a batch of one and returns its result
  /// or throws the batch function's exception (the same object).
  template <class A>
  requires(detail::is_trace_input_v<A> ? std::is_same_v<detail::input_type_t<A>, In>
                                       : std::is_convertible_v<const A&, In>) auto
  operator()(const A& a) const {
    if constexpr (detail::is_trace_input_v<A>) {
      return detail::record_node<Out>(state_->name, detail::batch_item_kernel<Out>::value,
                                      &state_->fn, state_, a);
    } else {
      std::optional<detail::untraced_scope> outside;
      if (auto* ctx = detail::trace_context::current()) {
        ctx->run_outside("batch op '" + state_->name + "'", __builtin_return_address(0));
        outside.emplace();
      }
      return direct(In(a));
    }
  }

  const std::string& name() const noexcept { return state_->name; }

 private:
  Out direct(const In& a) const {
    if (state_->windowed()) return windowed(a);
    std::vector<In> one{a};
    std::vector<Out> r;
    if constexpr (Async) {
      const detail::call_limits* limits = detail::call_limits::current();
      if (limits) limits->check_op(state_->name);
      detail::direct_instance instance(state_->per_batch, limits, state_->tokens(one));
      r = detail::call_async<std::vector<Out>>(state_->fn, *state_, one);
    } else {
      r = state_->call(one);
    }
    if (r.size() != 1) std::rethrow_exception(detail::batch_size_error(*state_, r.size(), 1));
    return std::move(r.front());
  }

  /// A direct call of an op with a batch window: the call joins the waiting batch, and this
  /// thread waits for its result as a direct call of an async op does.
  Out windowed(const In& a) const {
    struct context {
      const In* input;
      detail::batch_sender* sender;
      std::uint32_t deduplicated;
    } c{&a, state_.get(), 0};
    auto start = +[](void* p, detail::async_slot& slot) noexcept {
      auto& ctx = *static_cast<context*>(p);
      const detail::batch_item item{ctx.input, &slot};
      ctx.sender->send(std::span<const detail::batch_item>(&item, 1), ctx.deduplicated);
    };
    detail::direct_result<Out> out;
    detail::run_async_here(state_.get(), out.bytes, &detail::destroy_value<Out>, start, &c);
    struct destroy_at_exit {
      Out* p;
      ~destroy_at_exit() { p->~Out(); }
    } guard{out.get()};
    return std::move(*out.get());
  }

  std::shared_ptr<state> state_;
};

/// Makes a batch op named `name` from `fn(const std::vector<In>&) -> std::vector<Out>`, or the
/// async `fn(const std::vector<In>&, xcs::completion<std::vector<Out>>)`, which holds no thread
/// while the batch is in flight. `fn` returns one result per input, in order; a result of
/// another size fails every call of the batch with xcs::error. Options: `xcs::max_batch(n)`,
/// and, applied per batch, `xcs::blocking`, `xcs::max_concurrency(n)`, `xcs::rate_limit(l[,
/// weight])` (the weight takes the batch's `const std::vector<In>&`), and for a sync `fn`
/// `xcs::timeout(d)` and `xcs::retry(n, backoff)`.
///
///     auto embed = xcs::batch_op("embed", [](const std::vector<std::string>& texts) {
///       return client.embed_many(texts);  // one request
///     }, xcs::max_batch(2048));
template <class Fn, class... Options>
requires(detail::is_batch_option_v<Options>&&...) auto batch_op(std::string name, Fn&& fn,
                                                                Options... options) {
  using F = std::decay_t<Fn>;
  using sig = detail::batch_signature<F>;
  using In = typename sig::in;
  using Out = typename sig::out;
  constexpr bool deduced =
      !std::is_same_v<In, detail::undeduced> && !std::is_same_v<Out, detail::undeduced>;
  static_assert(deduced,
                "xcs::batch_op: the function must be std::vector<Out>(const std::vector<In>&) or "
                "void(const std::vector<In>&, xcs::completion<std::vector<Out>>), with one "
                "signature (not a generic lambda)");
  static_assert(!(std::is_same_v<Options, cache_t> || ...) &&
                    !(std::is_same_v<Options, cache_version_t> || ...),
                "xcs::batch_op: xcs::cache is not supported for a batch op; a batch sends equal "
                "inputs once already, and a cache in front of it belongs in the batch function");
  static_assert(
      !sig::async ||
          !((std::is_same_v<Options, timeout_t> || std::is_same_v<Options, retry_t>) || ...),
      "xcs::batch_op: xcs::timeout and xcs::retry are not supported for an async batch "
      "function yet; use the completion's stop_token() and retry inside the function");
  if constexpr (!deduced) {
    return detail::misuse_value{};  // the static_assert above is the one error
  } else {
    static_assert(std::is_object_v<Out> && std::is_move_constructible_v<Out>,
                  "xcs::batch_op: Out must be a movable object type");
    detail::op_options o;
    std::size_t cap = 0;
    std::uint64_t window_ns = 0;
    auto apply = [&](const auto& opt) {
      using O = std::decay_t<decltype(opt)>;
      if constexpr (std::is_same_v<O, max_batch_t>) {
        cap = opt.n;
      } else if constexpr (std::is_same_v<O, batch_window_t>) {
        window_ns = static_cast<std::uint64_t>(opt.ns);
      } else {
        o.apply(opt);
      }
    };
    (apply(options), ...);
    return batch_op_fn<F, In, Out, sig::async, detail::weight_of_t<Options...>>(
        std::move(name), std::forward<Fn>(fn), o, cap, window_ns);
  }
}

}  // namespace xcs
