// SPDX-License-Identifier: MIT
// xcs::map: a callable applied to each element of a vector, traced or plain.
#pragma once

#include <iterator>
#include <type_traits>
#include <utility>
#include <vector>

#include "xcs/detail/traits.hpp"

namespace xcs {

namespace detail {
// Misuses of xcs::map. Each is a function keyed on the callable alone, so that the plain and the
// traced run of one body (which call map with different element types) report it once.
template <class F>
auto map_cannot_call() {
  static_assert(always_false_v<F>,
                "xcs::map: f cannot be called with an element of v; make f take the element "
                "type by value or const reference (a generic lambda takes both plain and "
                "traced elements)");
}
template <class F>
auto map_of_void() {
  static_assert(always_false_v<F>,
                "xcs::map: f returns void, so there is nothing to collect; call it in a plain "
                "for loop instead");
}
}  // namespace detail

/// A `std::vector` of `f(e)` for each element `e` of `v`, in order. `f` is an op or any
/// callable that takes an element; `v` is anything with `begin()`, `end()` and `size()`: a
/// plain vector or array, a traced one (an argument, or an op's result), or a vector of traced
/// values the body built.
///
/// On plain values it is a plain loop. On traced values each element is a traced value, so
/// each call of an op becomes a node and the calls run at the same time. For an op's vector
/// result the size is known only once the op has run: taking it is a read, so the call runs
/// staged (docs/api.md, "Staged execution"), and the elements stay traced values.
///
///     auto f = xcs::jit([](const auto& docs) { return judge(xcs::map(summarize, docs)); });
///     f(std::vector<std::string>{a, b, c});  // the three summaries run at once
template <class F, class V>
auto map(F&& f, const V& v) {
  using element_ref = decltype(*std::begin(v));
  if constexpr (!std::is_invocable_v<F&, element_ref>) {
    detail::map_cannot_call<std::decay_t<F>>();
    return std::vector<detail::misuse_value>();
  } else {
    using R = std::decay_t<std::invoke_result_t<F&, element_ref>>;
    if constexpr (std::is_void_v<R> || std::is_same_v<R, traced<void>>) {
      detail::map_of_void<std::decay_t<F>>();
      return std::vector<detail::misuse_value>();
    } else {
      std::vector<R> out;
      out.reserve(static_cast<std::size_t>(std::size(v)));
      for (const auto& e : v) out.push_back(detail::invoke_callable(f, e));
      return out;
    }
  }
}

}  // namespace xcs
