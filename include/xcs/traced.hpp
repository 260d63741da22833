// SPDX-License-Identifier: MIT
// Traced values: the proxies a jitted body sees in place of its arguments and op results.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "xcs/detail/graph.hpp"
#include "xcs/detail/record.hpp"
#include "xcs/detail/trace_context.hpp"

namespace xcs {

/// A value that exists only as a node of the graph while a body runs traced: an argument, an
/// element of a container argument, or the result of an op or operator. Copying it copies a
/// handle.
///
/// What a body may do with it: pass it to ops, combine it with `+ - * / %` and
/// `== != < <= > >=`, store it in containers, return it. Reading its concrete value (an `if`,
/// a conversion to `T`, a call of a plain function taking `T`) makes the call staged: the read
/// waits for that value (and only for the ops it depends on) while other ops keep running.
template <class T>
class traced {
 public:
  using value_type = T;

  /// Reads the value: waits until it is computed and returns a copy. Throws what the op that
  /// computes it threw. Not inlined, so that its return address is the body's line.
  [[gnu::noinline]] operator T() const {
    return *static_cast<const T*>(
        detail::read_value(ctx_, id_, typeid(T), __builtin_return_address(0)));
  }

  template <class U>
  traced& operator+=(const U& u) {
    return *this = *this + u;
  }
  template <class U>
  traced& operator-=(const U& u) {
    return *this = *this - u;
  }
  template <class U>
  traced& operator*=(const U& u) {
    return *this = *this * u;
  }
  template <class U>
  traced& operator/=(const U& u) {
    return *this = *this / u;
  }
  template <class U>
  traced& operator%=(const U& u) {
    return *this = *this % u;
  }

 private:
  friend struct detail::traced_access;
  traced(detail::trace_context* ctx, detail::value_id id) noexcept : ctx_(ctx), id_(id) {}

  detail::trace_context* ctx_;
  detail::value_id id_;
};

/// The result of an op that returns `void`. It is recorded and runs once per call; there is
/// nothing to read from it.
template <>
class traced<void> {
 private:
  friend struct detail::traced_access;
  traced() noexcept = default;
};

namespace detail {

template <class C>
const void* element_at(const void* container, std::size_t i) {
  return &(*static_cast<const C*>(container))[i];
}

struct index_fn {
  template <class C>
  auto operator()(const C& c, std::size_t i) const {
    if (i >= c.size()) throw std::out_of_range("xcs: index out of range");
    return c[i];
  }
};

/// A traced `std::vector` or `std::array`. For arguments (and their elements) the size is
/// part of the signature, so `size()` is a plain number and each element is a traced value.
/// For an op's result the size is known only once the op has run: `operator[]` records an
/// index node, while `size()` and iteration read the vector (a staged read of its size; the
/// elements stay traced values).
template <class C, class T>
class traced_sequence {
 public:
  using value_type = C;
  using element_type = traced<T>;
  using const_iterator = typename std::vector<element_type>::const_iterator;
  using iterator = const_iterator;

  [[gnu::noinline]] std::size_t size() const { return known(__builtin_return_address(0)).size(); }
  [[gnu::noinline]] bool empty() const { return known(__builtin_return_address(0)).empty(); }
  const element_type& operator[](std::size_t i) const {
    if (elements_) {
      if (i >= elements_->size()) {
        context_of(ctx_, id_).abort(ctx_->describe(id_) + " indexed out of range");
      }
      return (*elements_)[i];
    }
    if (!indexed_) indexed_ = std::make_shared<std::vector<std::pair<std::size_t, element_type>>>();
    for (const auto& [index, e] : *indexed_) {
      if (index == i) return e;
    }
    auto e = record_operator<index_fn>("[]", static_cast<const traced<C>&>(*this), i);
    return indexed_->emplace_back(i, e).second;
  }
  const element_type& at(std::size_t i) const { return (*this)[i]; }
  const element_type& front() const { return (*this)[0]; }
  const element_type& back() const { return (*this)[size() - 1]; }
  [[gnu::noinline]] const_iterator begin() const {
    return known(__builtin_return_address(0)).begin();
  }
  [[gnu::noinline]] const_iterator end() const { return known(__builtin_return_address(0)).end(); }

  /// Reads the whole container, as for every traced value.
  [[gnu::noinline]] operator C() const {
    return *static_cast<const C*>(read_value(ctx_, id_, typeid(C), __builtin_return_address(0)));
  }

 private:
  friend struct traced_access;
  traced_sequence(trace_context* ctx, value_id id) noexcept : ctx_(ctx), id_(id) {}
  traced_sequence(trace_context* ctx, value_id id, std::vector<element_type> elements)
      : ctx_(ctx),
        id_(id),
        elements_(std::make_shared<std::vector<element_type>>(std::move(elements))) {}

  const std::vector<element_type>& known(const void* pc) const {
    if (!elements_) {
      std::vector<element_type> all;
      if constexpr (requires { std::tuple_size<C>::value; }) {
        for (std::size_t i = 0; i < std::tuple_size_v<C>; ++i) all.push_back((*this)[i]);
      } else {
        // The size is known only once the op ran: wait for the vector, then name its
        // elements, each a traced value of its own.
        const C& c = *static_cast<const C*>(read_value(ctx_, id_, typeid(C), pc));
        trace_context& ctx = context_of(ctx_, id_);
        all.reserve(c.size());
        for (std::size_t i = 0; i < c.size(); ++i) {
          value_id e =
              ctx.ir().add_element(id_, static_cast<std::uint32_t>(i), typeid(T), &element_at<C>);
          all.push_back(traced_access::make<T>(ctx_, e));
        }
      }
      elements_ = std::make_shared<std::vector<element_type>>(std::move(all));
    }
    return *elements_;
  }

  trace_context* ctx_;
  value_id id_;
  mutable std::shared_ptr<const std::vector<element_type>> elements_;
  mutable std::shared_ptr<std::vector<std::pair<std::size_t, element_type>>> indexed_;
};

}  // namespace detail

/// A traced `std::vector<T>` (not `std::vector<bool>`, which has no element addresses).
template <class T>
requires(!std::is_same_v<T, bool>) class traced<std::vector<T>>
    : public detail::traced_sequence<std::vector<T>, T> {
 private:
  friend struct detail::traced_access;
  using detail::traced_sequence<std::vector<T>, T>::traced_sequence;
};

/// A traced `std::array<T, N>`; its size is always known.
template <class T, std::size_t N>
class traced<std::array<T, N>> : public detail::traced_sequence<std::array<T, N>, T> {
 private:
  friend struct detail::traced_access;
  using detail::traced_sequence<std::array<T, N>, T>::traced_sequence;
};

namespace detail {

/// The proxy for argument (or element) `id` whose concrete value in this call is `actual`.
template <class T>
traced<T> make_proxy(trace_context& ctx, const T& actual, value_id id) {
  if constexpr (requires { typename traced<T>::element_type; }) {
    using E = typename traced<T>::element_type::value_type;
    std::vector<traced<E>> elements;
    elements.reserve(actual.size());
    for (std::size_t i = 0; i < actual.size(); ++i) {
      value_id e =
          ctx.ir().add_element(id, static_cast<std::uint32_t>(i), typeid(E), &element_at<T>);
      elements.push_back(make_proxy<E>(ctx, actual[i], e));
    }
    return traced_access::make<T>(&ctx, id, std::move(elements));
  } else {
    return traced_access::make<T>(&ctx, id);
  }
}

// Operator functors: the operation the node runs.
#define XCS_DETAIL_BINARY_FUNCTOR(name, op)                             \
  struct name {                                                         \
    template <class A, class B>                                         \
    auto operator()(const A& a, const B& b) const -> decltype(a op b) { \
      return a op b;                                                    \
    }                                                                   \
  };
XCS_DETAIL_BINARY_FUNCTOR(plus_fn, +)
XCS_DETAIL_BINARY_FUNCTOR(minus_fn, -)
XCS_DETAIL_BINARY_FUNCTOR(multiplies_fn, *)
XCS_DETAIL_BINARY_FUNCTOR(divides_fn, /)
XCS_DETAIL_BINARY_FUNCTOR(modulus_fn, %)
XCS_DETAIL_BINARY_FUNCTOR(equal_fn, ==)
XCS_DETAIL_BINARY_FUNCTOR(not_equal_fn, !=)
XCS_DETAIL_BINARY_FUNCTOR(less_fn, <)
XCS_DETAIL_BINARY_FUNCTOR(less_equal_fn, <=)
XCS_DETAIL_BINARY_FUNCTOR(greater_fn, >)
XCS_DETAIL_BINARY_FUNCTOR(greater_equal_fn, >=)
#undef XCS_DETAIL_BINARY_FUNCTOR

struct negate_fn {
  template <class A>
  auto operator()(const A& a) const -> decltype(-a) {
    return -a;
  }
};

/// At least one operand is traced, and the operation exists on the underlying types.
template <class Fn, class A, class B>
concept traced_binary =
    (is_traced<A>::value || is_traced<B>::value) &&
    std::is_invocable_v<const Fn&, const input_type_t<A>&, const input_type_t<B>&>;

}  // namespace detail

// Arithmetic and comparison on traced values record a node; plain operands become constants.
#define XCS_DETAIL_BINARY_OPERATOR(op, functor)                 \
  template <class A, class B>                                   \
  requires detail::traced_binary<detail::functor, A, B>         \
  auto operator op(const A& a, const B& b) {                    \
    return detail::record_operator<detail::functor>(#op, a, b); \
  }
XCS_DETAIL_BINARY_OPERATOR(+, plus_fn)
XCS_DETAIL_BINARY_OPERATOR(-, minus_fn)
XCS_DETAIL_BINARY_OPERATOR(*, multiplies_fn)
XCS_DETAIL_BINARY_OPERATOR(/, divides_fn)
XCS_DETAIL_BINARY_OPERATOR(%, modulus_fn)
XCS_DETAIL_BINARY_OPERATOR(==, equal_fn)
XCS_DETAIL_BINARY_OPERATOR(!=, not_equal_fn)
XCS_DETAIL_BINARY_OPERATOR(<, less_fn)
XCS_DETAIL_BINARY_OPERATOR(<=, less_equal_fn)
XCS_DETAIL_BINARY_OPERATOR(>, greater_fn)
XCS_DETAIL_BINARY_OPERATOR(>=, greater_equal_fn)
#undef XCS_DETAIL_BINARY_OPERATOR

template <class T>
requires std::is_invocable_v<const detail::negate_fn&, const T&>
auto operator-(const traced<T>& a) { return detail::record_operator<detail::negate_fn>("neg", a); }

// ---- tuples, pairs and arrays: xcs::get and structured bindings -------------------------

namespace detail {

/// Element I of a tuple, pair or array, copied out: the node behind `xcs::get<I>`.
template <std::size_t I>
struct get_fn {
  template <class T>
  auto operator()(const T& t) const -> std::decay_t<decltype(std::get<I>(t))> {
    return std::get<I>(t);
  }
  /// "get<I>", as the node's name in listings.
  static constexpr auto spelling = [] {
    std::array<char, 32> s{'g', 'e', 't', '<'};
    std::size_t digits = 1;
    for (std::size_t v = I; v >= 10; v /= 10) ++digits;
    for (std::size_t i = 0, v = I; i < digits; ++i, v /= 10)
      s[4 + digits - 1 - i] = char('0' + v % 10);
    s[4 + digits] = '>';
    return s;
  }();
};

}  // namespace detail

/// Element `I` of a tuple, pair or array, traced or plain, so that one body compiles both
/// ways. On a traced value it records a node that copies the element out (no read: the call
/// does not go staged) and returns a traced value; on a plain one it is `std::get<I>`.
/// Structured bindings on traced tuples, pairs and arrays use it.
///
///     auto [text, tokens] = generate(prompt);       // generate returns std::pair<string, int>
///     auto score = judge(xcs::get<0>(draft), text);  // the same as std::get on plain values
template <std::size_t I, class T>
requires detail::is_tuple_like<T>::value auto get(const traced<T>& t) {
  static_assert(I < std::tuple_size_v<T>, "xcs::get: the index is out of range for the tuple");
  return detail::record_operator<detail::get_fn<I>>(
      std::string_view(detail::get_fn<I>::spelling.data()), t);
}
template <std::size_t I, class T, std::size_t N>
traced<T> get(const traced<std::array<T, N>>& a) {
  static_assert(I < N, "xcs::get: the index is out of range for the array");
  return a[I];
}
template <std::size_t I, class T>
requires(!detail::is_traced<std::remove_cvref_t<T>>::value) decltype(auto) get(T&& t) {
  return std::get<I>(std::forward<T>(t));
}

}  // namespace xcs

// Structured bindings: `auto [a, b] = op(x);` gives one traced value per element.
template <class... T>
struct std::tuple_size<xcs::traced<std::tuple<T...>>>
    : std::integral_constant<std::size_t, sizeof...(T)> {};
template <std::size_t I, class... T>
struct std::tuple_element<I, xcs::traced<std::tuple<T...>>> {
  using type = xcs::traced<std::decay_t<std::tuple_element_t<I, std::tuple<T...>>>>;
};
template <class A, class B>
struct std::tuple_size<xcs::traced<std::pair<A, B>>> : std::integral_constant<std::size_t, 2> {};
template <std::size_t I, class A, class B>
struct std::tuple_element<I, xcs::traced<std::pair<A, B>>> {
  using type = xcs::traced<std::decay_t<std::tuple_element_t<I, std::pair<A, B>>>>;
};
template <class T, std::size_t N>
struct std::tuple_size<xcs::traced<std::array<T, N>>> : std::integral_constant<std::size_t, N> {};
template <std::size_t I, class T, std::size_t N>
struct std::tuple_element<I, xcs::traced<std::array<T, N>>> {
  using type = xcs::traced<T>;
};
