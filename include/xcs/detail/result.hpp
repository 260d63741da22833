// SPDX-License-Identifier: MIT
// The result recipe: how to rebuild the direct call's return value from a finished plan.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "xcs/detail/record.hpp"
#include "xcs/detail/trace_context.hpp"
#include "xcs/traced.hpp"

namespace xcs::detail {

/// A flattened walk of the body's return value, recorded at trace time against the type `R`
/// the direct call returns, replayed after each run to build an `R`.
struct result_recipe {
  struct leaf {
    value_id value;
    /// Constructs the leaf's `R` at `out` from the value at `in` (moving when `move`).
    void (*make)(void* out, void* in, bool move);
    bool move = false;  ///< the value is a node result read by no other leaf
  };
  enum class step : std::uint8_t { leaf, structure };
  std::vector<step> steps;
  std::vector<leaf> leaves;
  std::vector<std::size_t> sizes;  ///< sizes of vectors the body built, in walk order
};

template <class R, class U>
void make_leaf(void* out, void* in, bool move) {
  U* u = static_cast<U*>(in);
  if constexpr (std::is_constructible_v<R, U&&>) {
    if (move) {
      ::new (out) R(std::move(*u));
      return;
    }
  }
  if constexpr (std::is_constructible_v<R, const U&>) {
    ::new (out) R(std::as_const(*u));
  } else {
    throw std::logic_error("xcs: result value cannot be copied");
  }
}

template <class T>
struct is_vector : std::false_type {};
template <class T, class A>
struct is_vector<std::vector<T, A>> : std::true_type {};
template <class T>
struct is_std_array : std::false_type {};
template <class T, std::size_t N>
struct is_std_array<std::array<T, N>> : std::true_type {};
template <class T>
struct is_tuple_like : std::false_type {};
template <class... T>
struct is_tuple_like<std::tuple<T...>> : std::true_type {};
template <class A, class B>
struct is_tuple_like<std::pair<A, B>> : std::true_type {};

/// Records how the traced return value `x` maps onto `R`. Aborts the trace if it cannot.
template <class R, class X>
void collect(trace_context& ctx, const X& x, result_recipe& out) {
  using D = std::remove_cvref_t<X>;
  if constexpr (is_traced<D>::value && !std::is_same_v<D, traced<void>>) {
    using U = typename D::value_type;
    if constexpr (std::is_constructible_v<R, const U&> || std::is_constructible_v<R, U&&>) {
      out.steps.push_back(result_recipe::step::leaf);
      out.leaves.push_back({x.id(), &make_leaf<R, U>});
    } else {
      ctx.abort("the body returns " + graph::type_name(typeid(U)) +
                " where the direct call returns " + graph::type_name(typeid(R)));
    }
  } else if constexpr (is_tuple_like<D>::value && is_tuple_like<R>::value) {
    if constexpr (std::tuple_size_v<D> == std::tuple_size_v<R>) {
      out.steps.push_back(result_recipe::step::structure);
      [&]<std::size_t... I>(std::index_sequence<I...>) {
        (collect<std::tuple_element_t<I, R>>(ctx, std::get<I>(x), out), ...);
      }
      (std::make_index_sequence<std::tuple_size_v<R>>{});
    } else {
      ctx.abort("the body returns a tuple of another size than the direct call");
    }
  } else if constexpr ((is_vector<D>::value && is_vector<R>::value) ||
                       (is_std_array<D>::value && is_std_array<R>::value)) {
    out.steps.push_back(result_recipe::step::structure);
    if constexpr (is_vector<R>::value) out.sizes.push_back(x.size());
    for (const auto& e : x) collect<typename R::value_type>(ctx, e, out);
  } else if constexpr (std::is_constructible_v<R, const D&> && std::is_copy_constructible_v<D> &&
                       !is_traced<D>::value) {
    // A plain value the body computed at trace time: a constant of the plan.
    out.steps.push_back(result_recipe::step::leaf);
    value_id c = ctx.g.add_constant(std::make_shared<const D>(x), typeid(D));
    out.leaves.push_back({c, &make_leaf<R, D>});
  } else {
    ctx.abort("the body returns " + graph::type_name(typeid(D)) +
              ", which xcs cannot map onto the direct call's " + graph::type_name(typeid(R)));
  }
}

/// Replays a recipe. `value(id)` gives the address of a value in the finished run.
template <class ValueFn>
class result_builder {
 public:
  result_builder(const result_recipe& r, ValueFn value) : r_(r), value_(value) {}

  template <class R>
  R build() {
    if constexpr (is_tuple_like<R>::value || is_vector<R>::value || is_std_array<R>::value) {
      if (r_.steps[step_++] == result_recipe::step::structure) return build_structure<R>();
      --step_;
    }
    ++step_;
    return build_leaf<R>();
  }

 private:
  template <class R>
  R build_structure() {
    if constexpr (is_tuple_like<R>::value) {
      return [&]<std::size_t... I>(std::index_sequence<I...>) {
        return R{build<std::tuple_element_t<I, R>>()...};
      }
      (std::make_index_sequence<std::tuple_size_v<R>>{});
    } else if constexpr (is_vector<R>::value) {
      R v;
      std::size_t n = r_.sizes[size_++];
      v.reserve(n);
      for (std::size_t i = 0; i < n; ++i) v.push_back(build<typename R::value_type>());
      return v;
    } else {
      return [&]<std::size_t... I>(std::index_sequence<I...>) {
        return R{{((void)I, build<typename R::value_type>())...}};
      }
      (std::make_index_sequence<std::tuple_size_v<R>>{});
    }
  }

  template <class R>
  R build_leaf() {
    const result_recipe::leaf& l = r_.leaves[leaf_++];
    alignas(R) unsigned char buf[sizeof(R)];
    l.make(buf, value_(l.value), l.move);
    R* p = std::launder(reinterpret_cast<R*>(buf));
    struct destroy {
      R* p;
      ~destroy() { p->~R(); }
    } guard{p};
    return std::move(*p);
  }

  const result_recipe& r_;
  ValueFn value_;
  std::size_t step_ = 0, leaf_ = 0, size_ = 0;
};

}  // namespace xcs::detail
