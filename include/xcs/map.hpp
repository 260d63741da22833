// SPDX-License-Identifier: MIT
// xcs::map: a callable applied to each element of a vector, traced or plain.
#pragma once

#include <iterator>
#include <type_traits>
#include <utility>
#include <vector>

#include "xcs/detail/traits.hpp"

namespace xcs {

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
  static_assert(std::is_invocable_v<F&, element_ref>,
                "xcs::map: f cannot be called with an element of v; make f take the element "
                "type by value or const reference (a generic lambda takes both plain and traced "
                "elements)");
  using R = std::invoke_result_t<F&, element_ref>;
  static_assert(!std::is_void_v<R>,
                "xcs::map: f returns void, so there is nothing to collect; call it in a plain "
                "for loop instead");
  std::vector<std::decay_t<R>> out;
  out.reserve(static_cast<std::size_t>(std::size(v)));
  for (const auto& e : v) out.push_back(detail::invoke_callable(f, e));
  return out;
}

}  // namespace xcs
