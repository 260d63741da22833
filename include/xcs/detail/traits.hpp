// SPDX-License-Identifier: MIT
// The one trait family that says which types xcs treats as containers and tuples.
#pragma once

#include <array>
#include <cstddef>
#include <stop_token>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "xcs/detail/call_limits.hpp"

namespace xcs {
template <class T>
class traced;
}  // namespace xcs

namespace xcs::detail {

/// `std::vector<T>` and `std::array<T, N>`: the sequences xcs looks into. An argument of
/// such a type is traced element by element (its size is part of the signature), a body may
/// build one from traced values, and a return value of one is rebuilt element by element.
/// `std::vector<bool>` is not one: it has no element addresses.
template <class T>
struct sequence_traits {
  static constexpr bool is_sequence = false;
};
template <class E>
struct sequence_traits<std::vector<E>> {
  static constexpr bool is_sequence = !std::is_same_v<E, bool>;
  static constexpr bool dynamic = true;  ///< the size is a run-time value
  using element = E;
  template <class U>
  using rebind = std::vector<U>;
};
template <class E, std::size_t N>
struct sequence_traits<std::array<E, N>> {
  static constexpr bool is_sequence = true;
  static constexpr bool dynamic = false;  ///< the size is in the type
  using element = E;
  template <class U>
  using rebind = std::array<U, N>;
};
template <class T>
inline constexpr bool is_sequence_v = sequence_traits<std::remove_cvref_t<T>>::is_sequence;

/// `std::tuple` and `std::pair`.
template <class T>
struct is_tuple_like : std::false_type {};
template <class... T>
struct is_tuple_like<std::tuple<T...>> : std::true_type {};
template <class A, class B>
struct is_tuple_like<std::pair<A, B>> : std::true_type {};

template <class T>
struct is_traced : std::false_type {};
template <class T>
struct is_traced<traced<T>> : std::true_type {};

/// A sequence the body built from traced values (`std::vector<traced<T>>`); passed to an op
/// it becomes a "pack" node.
template <class T>
struct is_traced_pack : std::false_type {};
template <class T>
requires is_sequence_v<T> &&
    is_traced<typename sequence_traits<T>::element>::value struct is_traced_pack<T>
    : std::true_type {
};

/// True for the argument types that make an op call (or operator) a recorded node.
template <class A>
inline constexpr bool is_trace_input_v =
    is_traced<std::remove_cvref_t<A>>::value || is_traced_pack<std::remove_cvref_t<A>>::value;

/// The type an op receives for an argument of type A once the ops run.
template <class A>
struct input_type {
  using type = std::decay_t<A>;  // arrays of char decay to const char*
};
template <class T>
struct input_type<traced<T>> {
  using type = T;
};
template <class A>
requires is_traced_pack<A>::value struct input_type<A> {
  using type = typename sequence_traits<A>::template rebind<
      typename sequence_traits<A>::element::value_type>;
};
template <class A>
using input_type_t = typename input_type<std::remove_cvref_t<A>>::type;

/// Calls `f(a...)`. For the callables xcs accepts (function objects and function pointers;
/// not member pointers) this is std::invoke, without the cost of including <functional> in
/// every translation unit.
template <class F, class... A>
constexpr decltype(auto) invoke_callable(F&& f, A&&... a) {
  static_assert(!std::is_member_pointer_v<std::remove_cvref_t<F>>,
                "xcs: a member pointer is not a callable xcs takes; wrap it in a lambda");
  return static_cast<F&&>(f)(static_cast<A&&>(a)...);
}

/// Whether an op's callable takes a `std::stop_token` after its inputs `U...` (and cannot be
/// called without one).
/// (std::conjunction: the form with a token is not looked at when the plain one works, so
/// that a variadic callable is never instantiated with a token it does not take.)
template <class Fn, class... U>
inline constexpr bool takes_stop_token_v =
    std::conjunction_v<std::negation<std::is_invocable<const Fn&, const U&...>>,
                       std::is_invocable<const Fn&, const U&..., std::stop_token>>;

/// Calls an op's callable on its inputs, adding the running instance's stop token when the
/// callable takes one.
template <class F, class... A>
constexpr decltype(auto) invoke_with_stop(F&& f, A&&... a) {
  if constexpr (std::conjunction_v<std::negation<std::is_invocable<F&&, A&&...>>,
                                   std::is_invocable<F&&, A&&..., std::stop_token>>) {
    return invoke_callable(static_cast<F&&>(f), static_cast<A&&>(a)..., current_stop_token());
  } else {
    return invoke_callable(static_cast<F&&>(f), static_cast<A&&>(a)...);
  }
}

/// Whether an op's callable can be called on `A...`, with or without a trailing stop token.
template <class F, class... A>
inline constexpr bool op_invocable_v =
    std::disjunction_v<std::is_invocable<F, A...>, std::is_invocable<F, A..., std::stop_token>>;

/// What an op's callable returns for arguments `A...` (given a stop token if it takes one).
template <class F, class... A>
using op_call_result_t =
    typename std::conditional_t<std::is_invocable_v<F, A...>, std::invoke_result<F, A...>,
                                std::invoke_result<F, A..., std::stop_token>>::type;

/// The same as a trait, computed only when its `type` is named.
template <class F, class... A>
struct op_call_result {
  using type = op_call_result_t<F, A...>;
};

/// False, but only once instantiated: for `static_assert` in a discarded `if constexpr` branch.
template <class...>
inline constexpr bool always_false_v = false;

/// What a call returns after its misuse's `static_assert`, so that the code using the result
/// compiles on and the `static_assert` stays the only error. Never runs: the translation unit
/// does not compile.
template <class R>
R after_misuse() {
  return static_cast<R (*)()>(nullptr)();
}

/// The same when the right type is unknown (the callable cannot be called at all): it converts
/// to any type and takes the common operators.
struct misuse_value {
  template <class T>
  operator T() const {
    return after_misuse<T>();
  }
  template <class... A>
  misuse_value operator()(A&&...) const {
    return {};
  }
  template <class I>
  misuse_value operator[](const I&) const {
    return {};
  }
  misuse_value operator-() const { return {}; }
  misuse_value operator!() const { return {}; }
};

#define XCS_DETAIL_MISUSE_OPERATOR(op)                                                      \
  template <class A, class B>                                                               \
  requires(std::is_same_v<A, misuse_value> || std::is_same_v<B, misuse_value>) misuse_value \
  operator op(const A&, const B&) {                                                         \
    return {};                                                                              \
  }
XCS_DETAIL_MISUSE_OPERATOR(+)
XCS_DETAIL_MISUSE_OPERATOR(-)
XCS_DETAIL_MISUSE_OPERATOR(*)
XCS_DETAIL_MISUSE_OPERATOR(/)
XCS_DETAIL_MISUSE_OPERATOR(%)
XCS_DETAIL_MISUSE_OPERATOR(==)
XCS_DETAIL_MISUSE_OPERATOR(!=)
XCS_DETAIL_MISUSE_OPERATOR(<)
XCS_DETAIL_MISUSE_OPERATOR(<=)
XCS_DETAIL_MISUSE_OPERATOR(>)
XCS_DETAIL_MISUSE_OPERATOR(>=)
XCS_DETAIL_MISUSE_OPERATOR(&&)
XCS_DETAIL_MISUSE_OPERATOR(||)
#undef XCS_DETAIL_MISUSE_OPERATOR

/// An array argument as the pointer it decays to (a by-value parameter would receive that);
/// anything else forwarded unchanged.
template <class A>
decltype(auto) decay_array(A&& a) noexcept {
  if constexpr (std::is_array_v<std::remove_reference_t<A>>) {
    return static_cast<std::decay_t<A>>(a);
  } else {
    return std::forward<A>(a);
  }
}

}  // namespace xcs::detail
