// SPDX-License-Identifier: MIT
// How a call on traced values becomes a node: input values, constants, kernels, proxies.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <vector>

#include "xcs/detail/cache_key.hpp"
#include "xcs/detail/graph.hpp"
#include "xcs/detail/trace_context.hpp"
#include "xcs/detail/traits.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {

/// Makes and opens traced values: the only way in, so that no detail type shows in the
/// public interface of `traced`.
struct traced_access {
  template <class T, class... A>
  static traced<T> make(A&&... a) {
    return traced<T>(std::forward<A>(a)...);
  }
  template <class X>
  static value_id id(const X& x) noexcept {
    return x.id_;
  }
  template <class X>
  static trace_context* context(const X& x) noexcept {
    return x.ctx_;
  }
};

// ---- kernels ---------------------------------------------------------------------------

template <class R>
void destroy_value(void* p) noexcept {
  static_cast<R*>(p)->~R();
}

template <class R>
void relocate_value(void* to, void* from) {
  R* f = static_cast<R*>(from);
  struct destroy_at_exit {
    R* p;
    ~destroy_at_exit() { p->~R(); }
  } guard{f};
  ::new (to) R(std::move(*f));
}

template <class R>
constexpr kernel make_kernel(void (*invoke)(const void*, const void* const*, std::uint32_t, void*),
                             void (*start)(const void*, const void* const*,
                                           async_slot&) noexcept = nullptr,
                             bool wants_stop = false,
                             double (*weigh)(const void*, const void* const*) = nullptr,
                             const cache_kernel* cache = nullptr) {
  if constexpr (std::is_void_v<R>) {
    kernel k{invoke, nullptr, 0, 1, &typeid(void), start, wants_stop, weigh, nullptr, cache};
    k.trivial_destroy = true;
    return k;
  } else {
    void (*relocate)(void*, void*) = nullptr;
    if constexpr (std::is_move_constructible_v<R>) relocate = &relocate_value<R>;
    kernel k{invoke, &destroy_value<R>, sizeof(R), alignof(R), &typeid(R),
             start,  wants_stop,        weigh,     relocate,   cache};
    k.trivial_destroy = std::is_trivially_destructible_v<R>;
    return k;
  }
}

/// The tokens an instance of an op with rate-limit weight `W` takes, from its inputs `U...`.
template <class W, class... U>
double weigh_inputs(const void* weight, const void* const* in) {
  return [&]<std::size_t... I>(std::index_sequence<I...>) {
    return static_cast<double>(
        invoke_callable(*static_cast<const W*>(weight), *static_cast<const U*>(in[I])...));
  }
  (std::index_sequence_for<U...>{});
}

/// weigh_inputs for weight `W`, or null when the op has none (W is void).
template <class W, class... U>
constexpr auto weigh_of() {
  using weigh_fn = double (*)(const void*, const void* const*);
  if constexpr (std::is_void_v<W>) {
    return static_cast<weigh_fn>(nullptr);
  } else {
    return static_cast<weigh_fn>(&weigh_inputs<W, U...>);
  }
}

/// Calls `Fn` on typed inputs `U...` (and the instance's stop token, if it takes one) and
/// constructs its `R` result in place. `W`: the op's rate-limit weight function, or void;
/// `Codec`: the codec of its xcs::cache option, or void.
template <class Fn, class R, class W, class Codec, class... U>
struct weighed_op_kernel;
template <class Fn, class R, class... U>
using op_kernel = weighed_op_kernel<Fn, R, void, void, U...>;
template <class Fn, class R, class W, class Codec, class... U>
struct weighed_op_kernel {
  static constexpr bool wants_stop = takes_stop_token_v<Fn, U...>;
  static void invoke(const void* fn, const void* const* in, std::uint32_t, void* out) {
    call(*static_cast<const Fn*>(fn), in, out, std::index_sequence_for<U...>{});
  }
  template <std::size_t... I>
  static void call(const Fn& f, const void* const* in, void* out, std::index_sequence<I...>) {
    if constexpr (std::is_void_v<R>) {
      invoke_with_stop(f, *static_cast<const U*>(in[I])...);
    } else {
      ::new (out) R(invoke_with_stop(f, *static_cast<const U*>(in[I])...));
    }
  }
  static inline const kernel value = make_kernel<R>(
      &invoke, nullptr, wants_stop, weigh_of<W, U...>(), cache_kernel_for<Codec, R, U...>());
};

/// Builds a container of `n` inputs of type T (the "pack" node).
template <class C, class T>
struct pack_kernel {
  static void invoke(const void*, const void* const* in, std::uint32_t n, void* out) {
    if constexpr (requires(C c) { c.reserve(std::size_t{}); }) {
      C* c = ::new (out) C();
      try {
        c->reserve(n);
        for (std::uint32_t i = 0; i < n; ++i) c->push_back(*static_cast<const T*>(in[i]));
      } catch (...) {
        c->~C();
        throw;
      }
    } else {
      fill(in, out, std::make_index_sequence<std::tuple_size_v<C>>{});
    }
  }
  template <std::size_t... I>
  static void fill(const void* const* in, void* out, std::index_sequence<I...>) {
    ::new (out) C{{*static_cast<const T*>(in[I])...}};
  }
  static inline const kernel value = make_kernel<C>(&invoke);
};

template <class R>
using op_result_t = std::decay_t<R>;

// ---- inputs ----------------------------------------------------------------------------

/// A string literal or char array passed to an op is kept as a `const char*` into a copy the
/// graph owns, so the plan never points into the body's stack.
struct owned_c_string {
  std::string text;
  const char* ptr;
};

template <class A>
value_id input_of(trace_context& ctx, const A& a) {
  using D = std::remove_cvref_t<A>;
  if constexpr (is_traced<D>::value) {
    context_of(traced_access::context(a), traced_access::id(a));
    return traced_access::id(a);
  } else if constexpr (is_traced_pack<D>::value) {
    using C = input_type_t<D>;
    using T = typename C::value_type;
    std::vector<value_id> ids;
    ids.reserve(a.size());
    for (const auto& e : a) ids.push_back(input_of(ctx, e));
    return ctx.pack(typeid(C), ids, pack_kernel<C, T>::value);
  } else if constexpr (std::is_array_v<D> &&
                       std::is_same_v<std::remove_cv_t<std::remove_extent_t<D>>, char>) {
    auto s = std::make_shared<owned_c_string>();
    s->text = std::string(a);
    s->ptr = s->text.c_str();
    return ctx.ir().add_constant(std::shared_ptr<const void>(s, &s->ptr), typeid(const char*));
  } else if constexpr (!std::is_copy_constructible_v<std::decay_t<A>>) {
    static_assert(always_false_v<A>,
                  "xcs: a plain value passed to an op in a traced body becomes a constant of the "
                  "plan, so it must be copyable; pass it to the jitted function as an argument, "
                  "or hold it in a std::shared_ptr");
    return no_id;
  } else {
    using T = std::decay_t<A>;
    return ctx.ir().add_constant(std::make_shared<const T>(a), typeid(T));
  }
}

/// The trace context of the first traced input among `a...`.
template <class... A>
trace_context& context_of_inputs(const A&... a) {
  trace_context* ctx = nullptr;
  auto pick = [&](const auto& x) {
    using D = std::remove_cvref_t<decltype(x)>;
    if (ctx) return;
    if constexpr (is_traced<D>::value) {
      ctx = traced_access::context(x);
    } else if constexpr (is_traced_pack<D>::value) {
      if (!x.empty()) ctx = traced_access::context(*x.begin());
    }
  };
  (pick(a), ...);
  if (!ctx) ctx = trace_context::current();
  if (!ctx) throw trace_error("xcs: an op was called on traced values outside a trace");
  return *ctx;
}

/// Records a node that runs kernel `k` (result type R) of callable `fn` on `a...`, and returns
/// a proxy of its result.
template <class R, class... A>
traced<R> record_node(std::string_view name, const kernel& k, const void* fn,
                      std::shared_ptr<const op_identity> op, const A&... a) {
  trace_context& ctx = context_of_inputs(a...);
  std::array<value_id, sizeof...(A)> ids{input_of(ctx, a)...};
  value_id r = ctx.add_node(name, ids, k, fn, std::move(op));
  if constexpr (std::is_void_v<R>) {
    return traced_access::make<R>();
  } else {
    return traced_access::make<R>(&ctx, r);
  }
}

/// Records a call of `fn` (an op's callable, or an operator functor) on `a...`. The caller has
/// checked that `fn` takes the inputs as const.
template <class W = void, class Codec = void, class Fn, class... A>
auto record_call(std::string_view name, const Fn* fn, std::shared_ptr<const op_identity> op,
                 const A&... a) {
  using R = op_result_t<op_call_result_t<const Fn&, const input_type_t<A>&...>>;
  return record_node<R>(name, weighed_op_kernel<Fn, R, W, Codec, input_type_t<A>...>::value, fn,
                        std::move(op), a...);
}

/// Operators run stateless functors; the kernel ignores `fn`.
template <class Fn, class... A>
auto record_operator(std::string_view spelling, const A&... a) {
  static constexpr Fn functor{};
  return record_call(spelling, &functor, nullptr, a...);
}

}  // namespace xcs::detail
