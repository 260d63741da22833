// SPDX-License-Identifier: MIT
// xcs::async_op: an op whose function starts the work and returns; a completion ends it later,
// from any thread, and no thread waits meanwhile.
#pragma once

#include <cstdint>
#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>

#include "xcs/detail/async.hpp"
#include "xcs/detail/call_limits.hpp"
#include "xcs/detail/op_runtime.hpp"
#include "xcs/detail/record.hpp"
#include "xcs/detail/trace_context.hpp"
#include "xcs/error.hpp"
#include "xcs/op.hpp"
#include "xcs/traced.hpp"

namespace xcs {

template <class R>
class completion;

namespace detail {

/// What every completion shares: its slot, the second-call and drop rules, and fail().
class completion_base {
 public:
  completion_base(completion_base&& o) noexcept
      : slot_(std::exchange(o.slot_, nullptr)), stop_(o.stop_) {}
  completion_base& operator=(completion_base&& o) noexcept {
    if (this != &o) {
      drop();
      slot_ = std::exchange(o.slot_, nullptr);
      stop_ = o.stop_;
    }
    return *this;
  }
  completion_base(const completion_base&) = delete;
  completion_base& operator=(const completion_base&) = delete;
  ~completion_base() { drop(); }

  /// Completes the op with `e`, which reaches the caller as the same object (a null `e`
  /// becomes an `xcs::error`). No effect if this completion was called, failed or moved from.
  void fail(std::exception_ptr e) noexcept {
    if (async_slot* s = std::exchange(slot_, nullptr)) {
      s->done_error = e ? std::move(e) : completion_null_failure(s->op);
      completion_arrives(*s);
    }
  }
  /// True until the completion is called, failed or moved from.
  bool pending() const noexcept { return slot_ != nullptr; }
  /// The op instance's stop token: stop is requested at the call's deadline or cancellation,
  /// at the op's timeout, and when an op before it in program order failed. Register a
  /// `std::stop_callback` on it to abort the work. It belongs to the instance: a moved-to
  /// completion has it too, and it stays valid after the completion is called.
  std::stop_token stop_token() const noexcept { return stop_; }

 protected:
  explicit completion_base(async_slot& s) noexcept : slot_(&s), stop_(current_stop_token()) {}
  /// The slot, taken: later calls find none.
  async_slot* take() noexcept { return std::exchange(slot_, nullptr); }

 private:
  void drop() noexcept {
    if (async_slot* s = take()) {
      s->done_error = completion_dropped(s->op);
      completion_arrives(*s);
    }
  }
  async_slot* slot_;
  std::stop_token stop_;
};

/// Makes completions (their constructor is not public).
struct completion_access {
  template <class R>
  static completion<R> make(async_slot& s) noexcept {
    return completion<R>(s);
  }
};

}  // namespace detail

/// The other half of an async op: whoever holds it completes the op, once, from any thread.
/// `done(value)` gives the result (`done()` for `void`), `done.fail(e)` an exception. Movable,
/// not copyable; one call takes effect, later ones (and calls on a moved-from completion) do
/// nothing. Destroying it uncalled fails the op with `xcs::error` ("completion dropped"), so a
/// lost callback cannot hang a call. Calling it may run no more than xcs's bookkeeping on the
/// calling thread: the op's dependents run on the pool or the jitted call's own thread. One
/// object is not to be called from two threads at once.
///
///     auto fetch = xcs::async_op("fetch", [](const std::string& url, xcs::completion<int> done) {
///       http.get_async(url, [d = std::move(done)](int status) mutable { d(status); });
///     });
template <class R>
class completion : public detail::completion_base {
 public:
  /// Completes the op with `value`. No effect after the first call.
  void operator()(R value) noexcept {
    if (detail::async_slot* s = take()) {
      try {
        ::new (s->out) R(std::move(value));
        s->has_value = true;
      } catch (...) {
        s->done_error = std::current_exception();  // R's move threw: that is the outcome
      }
      detail::completion_arrives(*s);
    }
  }

 private:
  friend struct detail::completion_access;
  explicit completion(detail::async_slot& s) noexcept : completion_base(s) {}
};

/// The completion of an async op without a result.
template <>
class completion<void> : public detail::completion_base {
 public:
  /// Completes the op. No effect after the first call.
  void operator()() noexcept {
    if (detail::async_slot* s = take()) detail::completion_arrives(*s);
  }

 private:
  friend struct detail::completion_access;
  explicit completion(detail::async_slot& s) noexcept : completion_base(s) {}
};

namespace detail {

/// Calls an async op's function `Fn` on typed inputs `U...` with a completion of `R`. `W`: its
/// rate-limit weight function, or void; `Codec`: the codec of its xcs::cache option, or void.
template <class Fn, class R, class W, class Codec, class... U>
struct async_kernel {
  static void start(const void* fn, const void* const* in, async_slot& s) noexcept {
    call(*static_cast<const Fn*>(fn), in, s, std::index_sequence_for<U...>{});
  }
  template <std::size_t... I>
  static void call(const Fn& f, const void* const* in, async_slot& s,
                   std::index_sequence<I...>) noexcept {
    try {
      detail::invoke_callable(f, *static_cast<const U*>(in[I])..., completion_access::make<R>(s));
    } catch (...) {
      s.start_error = std::current_exception();
    }
  }
  /// The run engine always starts an async node through `start`: `invoke` is null. Every
  /// instance gets a stop token, for its completion's stop_token().
  static inline const kernel value = make_kernel<R>(nullptr, &start, true, weigh_of<W, U...>(),
                                                    cache_kernel_for<Codec, R, U...>());
};

/// The result type of an async op's function, read off its last parameter,
/// `xcs::completion<R>`; `undeduced` when it has no single signature (a generic lambda).
struct undeduced {};
template <class T>
struct completion_of {
  using type = undeduced;
};
template <class R>
struct completion_of<completion<R>> {
  using type = R;
};
template <class... P>
struct last_completion {
  using type = undeduced;
};
template <class P0, class... P>
struct last_completion<P0, P...> {
  using type = typename completion_of<
      std::remove_cvref_t<std::tuple_element_t<sizeof...(P), std::tuple<P0, P...>>>>::type;
};

template <class F, class = void>
struct async_signature {
  using type = undeduced;
};
template <class Ret, class... P>
struct async_signature<Ret (*)(P...)> : last_completion<P...> {};
template <class Ret, class... P>
struct async_signature<Ret (*)(P...) noexcept> : last_completion<P...> {};
template <class Ret, class C, class... P>
struct async_signature<Ret (C::*)(P...)> : last_completion<P...> {};
template <class Ret, class C, class... P>
struct async_signature<Ret (C::*)(P...) const> : last_completion<P...> {};
template <class Ret, class C, class... P>
struct async_signature<Ret (C::*)(P...) noexcept> : last_completion<P...> {};
template <class Ret, class C, class... P>
struct async_signature<Ret (C::*)(P...) const noexcept> : last_completion<P...> {};
template <class F>
struct async_signature<F, std::void_t<decltype(&F::operator())>>
    : async_signature<decltype(&F::operator())> {};

/// `R` as given, or read off `F`'s signature.
template <class R, class F>
using async_result_t =
    std::conditional_t<std::is_same_v<R, undeduced>, typename async_signature<F>::type, R>;

/// An async op's callable beside its runtime state (and identity).
template <class Fn>
struct async_op_state final : op_runtime {
  async_op_state(std::string op_name, Fn f, const op_options& o)
      : op_runtime(op_name, false, o.max_concurrency, true, o.policy(op_name)),
        fn(std::move(f)),
        weight(o.weight) {}
  Fn fn;
  std::shared_ptr<const void> weight;  // keeps policy->weight alive
};

/// Storage for a direct call's result until it is moved out.
template <class R>
struct direct_result {
  alignas(R) unsigned char bytes[sizeof(R)];
  R* get() noexcept { return std::launder(reinterpret_cast<R*>(bytes)); }
};

/// Calls `fn(a..., completion)` on this thread and waits for the completion.
template <class R, class Fn, class... A>
R call_async(const Fn& fn, op_runtime& op, const A&... a) {
  auto start = [&](async_slot& s) noexcept {
    try {
      detail::invoke_callable(fn, a..., completion_access::make<R>(s));
    } catch (...) {
      s.start_error = std::current_exception();
    }
  };
  auto trampoline =
      +[](void* p, async_slot& s) noexcept { (*static_cast<decltype(start)*>(p))(s); };
  if constexpr (std::is_void_v<R>) {
    run_async_here(&op, nullptr, nullptr, trampoline, &start);
  } else {
    direct_result<R> out;
    run_async_here(&op, out.bytes, &destroy_value<R>, trampoline, &start);
    struct destroy_at_exit {
      R* p;
      ~destroy_at_exit() { p->~R(); }
    } guard{out.get()};
    return std::move(*out.get());
  }
}

/// An async op's function that cannot take the call's inputs. A function keyed on the function
/// alone, so that the plain and the traced run of one body report it once.
template <class Fn>
auto async_op_not_callable() {
  static_assert(always_false_v<Fn>,
                "xcs::async_op: the function must be callable as const with its inputs as "
                "const T& followed by an xcs::completion<R> taken by value");
}
}  // namespace detail

/// An async op: like `xcs::op`, but its function starts the work and returns, and the work
/// completes the op later through the `xcs::completion<R>` passed as the last argument.
/// Called with traced values it records a node; while a plan (or a staged call) runs, the node
/// holds no thread between its start and its completion. Called with plain values it calls the
/// function and blocks the calling thread until the completion is called, then returns the
/// value or throws the exception passed to `fail` (the same object).
///
/// The function receives the inputs as `const T&`, valid until it returns (copy what the work
/// needs), and may run on several threads at once. If it throws, the op fails with that
/// exception, whatever the completion does (the run still waits for the completion, if the
/// function handed it on). Copies share one state. Thread-safe.
template <class Fn, class R, class Weight = void, class Codec = void>
class async_op_fn {
 public:
  template <class... Options>
  requires(detail::is_op_option_v<Options>&&...)
      async_op_fn(std::string name, Fn fn, Options... options)
      : state_(detail::make_op_state<detail::async_op_state<Fn>>(std::move(name), std::move(fn),
                                                                 options...)) {}

  template <class... A>
  decltype(auto) operator()(A&&... a) const {
    if constexpr (!std::is_invocable_v<const Fn&, const detail::input_type_t<A>&...,
                                       completion<R>>) {
      detail::async_op_not_callable<Fn>();
      if constexpr ((detail::is_trace_input_v<A> || ...)) {
        return detail::after_misuse<traced<R>>();
      } else {
        return detail::after_misuse<R>();
      }
    } else if constexpr ((detail::is_trace_input_v<A> || ...)) {
      return detail::record_node<R>(
          state_->name,
          detail::async_kernel<Fn, R, Weight, Codec, detail::input_type_t<A>...>::value,
          &state_->fn, state_, a...);
    } else {
      std::optional<detail::untraced_scope> outside;
      if (auto* ctx = detail::trace_context::current()) {
        // Plain arguments inside a body: the op runs here and now, as in the direct call.
        ctx->run_outside("async op '" + state_->name + "'", __builtin_return_address(0));
        outside.emplace();
      }
      const detail::call_limits* limits = detail::call_limits::current();
      if (limits) limits->check_op(state_->name);
      auto once = [&]() -> R {
        // Tokens, then a permit held until the completion.
        detail::direct_instance instance(*state_, limits,
                                         detail::direct_tokens<Weight>(*state_, a...));
        detail::direct_timeout timeout(*state_);  // stops the work at its timeout
        return timeout.call(
            [&]() -> R { return detail::call_async<R>(state_->fn, *state_, a...); });
      };
      return detail::direct_call<Codec, R>(*state_, limits, once, a...);
    }
  }

  const std::string& name() const noexcept { return state_->name; }
  /// The concurrency bound, or 0 if there is none.
  std::uint32_t max_concurrency() const noexcept { return detail::concurrency_bound(*state_); }
  /// The most instances in flight at once so far (0 without a bound).
  std::uint32_t peak_concurrency() const noexcept { return detail::concurrency_peak(*state_); }

 private:
  std::shared_ptr<detail::async_op_state<Fn>> state_;
};

/// Makes an async op named `name` from `fn(const In&..., xcs::completion<R>)`. `R` is read off
/// `fn`'s last parameter; for a generic lambda, give it: `xcs::async_op<R>(name, fn)`. Options:
/// `xcs::max_concurrency(n)`, a slot held from the call of `fn` until the completion, and
/// those of `xcs::op` but `xcs::blocking` (a cached async op's result must be copyable).
///
///     auto fetch = xcs::async_op("fetch", [&loop](const std::string& url,
///                                                 xcs::completion<std::string> done) {
///       loop.get(url, std::move(done));  // the event loop calls done(body) or done.fail(e)
///     }, xcs::max_concurrency(64));
template <class R = detail::undeduced, class Fn, class... Options>
requires(detail::is_op_option_v<Options>&&...) auto async_op(std::string name, Fn&& fn,
                                                             Options... options) {
  using F = std::decay_t<Fn>;
  using Result = detail::async_result_t<R, F>;
  static_assert(!std::is_same_v<Result, detail::undeduced>,
                "xcs::async_op: cannot tell the result type: the function's last parameter "
                "must be an xcs::completion<R>; for a generic lambda write "
                "xcs::async_op<R>(name, fn)");
  static_assert(!(std::is_same_v<Options, blocking_t> || ...),
                "xcs::async_op: xcs::blocking does not apply; an async op holds no thread "
                "while it waits");
  static_assert(std::is_void_v<Result> || (std::is_object_v<Result> && !std::is_const_v<Result> &&
                                           std::is_move_constructible_v<Result>),
                "xcs::async_op: R must be void or a movable, non-const object type");
  return async_op_fn<F, Result, detail::weight_of_t<Options...>, detail::cache_codec_t<Options...>>(
      std::move(name), std::forward<Fn>(fn), options...);
}

}  // namespace xcs
