// SPDX-License-Identifier: MIT
// xcs::batch_op: an op of one input whose calls are sent to its function together, in batches
// that follow the graph (Haxl's data sources, DataLoader's batch function).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include "xcs/async_op.hpp"
#include "xcs/detail/batch.hpp"
#include "xcs/detail/batch_flight.hpp"
#include "xcs/detail/batch_send.hpp"
#include "xcs/detail/op_watch.hpp"
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
/// runtime state that carries the options, applied to each batch by its flight
/// (batch_flight.hpp), or by a direct call as to a direct call of an op. Always owned by a
/// shared_ptr: an attempt that outlives its batch (a timeout) keeps it alive.
template <class Fn, class In, class Out, bool Async, class Weight>
struct batch_op_state final
    : op_runtime,
      batch_sender,
      std::enable_shared_from_this<batch_op_state<Fn, In, Out, Async, Weight>> {
  batch_op_state(const std::string& op_name, Fn f, const op_options& o, std::size_t cap,
                 std::uint64_t window_ns)
      : op_runtime(op_name, o.blocking, 0, true),
        batch_sender(cap, !Async, window_ns),
        fn(std::move(f)),
        weight(o.weight),
        per_batch(op_name, o.blocking, o.max_concurrency, Async, o.policy(op_name)) {
    batch = this;
  }

  void send_now(std::span<const batch_item> items, batch_counts* counts) noexcept override {
    std::optional<batch_calls<In, Out>> calls;
    try {
      calls.emplace(items);
    } catch (...) {
      batch_calls<In, Out>::fail_items(items, std::current_exception());
      return;
    }
    const call_limits* limits = call_limits::current();
    if constexpr (!Async) {
      if (!limits && !per_batch.policy && !per_batch.limit) {
        // Nothing to wait for and nothing to watch: the function runs here.
        if (counts) counts->deduplicated = calls->deduplicated();
        try {
          std::vector<Out> r = watched_call(calls->inputs());
          calls->deliver(r, *this);
        } catch (...) {
          calls->fail(std::current_exception());
        }
        return;
      }
    }
    auto* f = new (std::nothrow) flight(*this, std::move(*calls), limits, counts);
    if (!f) {
      calls->fail(std::make_exception_ptr(std::bad_alloc()));
      return;
    }
    f->begin();
  }

  /// The sync function on `inputs`, watched by the blocking monitor as a plain op's node is
  /// (op_watch), so that a function seen waiting makes the op blocking: its later batches go
  /// from the blocking lane. The watch ends before any call gets its outcome, after which the
  /// op may be gone.
  std::vector<Out> watched_call(const std::vector<In>& inputs) const {
    op_watch watch(const_cast<batch_op_state*>(this));
    return invoke_callable(fn, inputs);
  }

  /// One attempt of a batch: the function called on `inputs`; its outcome goes to `s` (an
  /// async function's through its completion).
  void start_attempt(const std::vector<In>& inputs, async_slot& s) const noexcept {
    if constexpr (Async) {
      try {
        invoke_callable(fn, inputs, completion_access::make<std::vector<Out>>(s));
      } catch (...) {
        s.start_error = std::current_exception();
      }
    } else {
      try {
        ::new (s.out) std::vector<Out>(watched_call(inputs));
        s.has_value = true;
      } catch (...) {
        s.start_error = std::current_exception();
      }
      completion_arrives(s);
    }
  }

  /// A direct call's batch through the sync function, with the options applied as in a direct
  /// call of an op: tokens and a permit taken on this thread, the timeout checked at the
  /// return, retries after a backoff slept on this thread.
  std::vector<Out> call(const std::vector<In>& inputs) const {
    const call_limits* limits = call_limits::current();
    if (!limits && !per_batch.policy && !per_batch.limit) return invoke_callable(fn, inputs);
    if (limits) limits->check_op(name);
    auto once = [&]() -> std::vector<Out> {
      direct_instance instance(per_batch, limits, tokens(inputs));
      direct_timeout timeout(per_batch);
      return timeout.call([&] { return invoke_callable(fn, inputs); });
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

  /// A batch on its way through the per-batch options (batch_flight.hpp).
  class flight final : public batch_flight {
   public:
    flight(const batch_op_state& op, batch_calls<In, Out>&& calls, const call_limits* limits,
           batch_counts* counts) noexcept
        : batch_flight(op.per_batch, batch_result_kind_of<std::vector<Out>>, limits, counts,
                       calls.deduplicated()),
          op_(op),
          calls_(std::move(calls)) {}

   private:
    double tokens() const override { return op_.tokens(calls_.inputs()); }
    void start(async_slot& s, batch_attempt_keep& keep) noexcept override {
      const batch_op_state& op = op_;
      const std::vector<In>* inputs = &calls_.inputs();
      if (op.per_batch.policy && op.per_batch.policy->timeout_ns) {
        // The attempt may outlive the batch (it times out, the batch goes on and ends): the
        // function keeps its op and inputs.
        try {
          if (!shared_inputs_) shared_inputs_ = std::make_shared<const std::vector<In>>(*inputs);
          keep.op = op.shared_from_this();
          keep.inputs = shared_inputs_;
          inputs = shared_inputs_.get();
        } catch (...) {
          s.start_error = std::current_exception();
          completion_arrives(s);
          return;
        }
      }
      op.start_attempt(*inputs, s);  // `this` may be gone once the function has begun
    }
    void deliver(void* results) noexcept override {
      auto* r = std::launder(static_cast<std::vector<Out>*>(results));
      calls_.deliver(*r, op_);
      r->~vector();
    }
    void fail(const std::exception_ptr& e) noexcept override { calls_.fail(e); }

    const batch_op_state& op_;
    batch_calls<In, Out> calls_;
    std::shared_ptr<const std::vector<In>> shared_inputs_;  // made for an op with a timeout
  };

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
      // As a direct call of an async op: tokens, a permit held until the completion, the
      // timeout's stop, and the retries, on this thread.
      const detail::call_limits* limits = detail::call_limits::current();
      if (limits) limits->check_op(state_->name);
      auto once = [&]() -> std::vector<Out> {
        detail::direct_instance instance(state_->per_batch, limits, state_->tokens(one));
        detail::direct_timeout timeout(state_->per_batch);
        return timeout.call(
            [&] { return detail::call_async<std::vector<Out>>(state_->fn, *state_, one); });
      };
      r = detail::direct_attempts(state_->per_batch, limits, once);
      if (limits) limits->check_op(state_->name);
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
      detail::batch_counts counts;
    } c{&a, state_.get(), {}};
    auto start = +[](void* p, detail::async_slot& slot) noexcept {
      auto& ctx = *static_cast<context*>(p);
      const detail::batch_item item{ctx.input, &slot};
      ctx.sender->send(std::span<const detail::batch_item>(&item, 1), &ctx.counts);
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
/// weight])` (the weight takes the batch's `const std::vector<In>&`), `xcs::timeout(d)` and
/// `xcs::retry(n, backoff)` for a sync or async `fn`; a batch's waits hold no thread.
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
