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

#include "xcs/detail/graph.hpp"
#include "xcs/detail/record.hpp"
#include "xcs/detail/trace_context.hpp"
#include "xcs/detail/traits.hpp"

namespace xcs::detail {

/// The values of a finished run (a plan's or a staged call's).
class finished_values {
 public:
  virtual void* value(value_id v) const = 0;

 protected:
  ~finished_values() = default;
};

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

  /// Marks the leaves that may move their value out: node results no other leaf reads.
  void plan_moves(const graph& g);
  /// Removes every step, leaf and size, keeping the vectors' capacity.
  void clear() noexcept {
    steps.clear();
    leaves.clear();
    sizes.clear();
  }
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
    throw error("xcs: the result value cannot be copied");
  }
}

/// Both sequences of the same kind (vector and vector, or array and array).
template <class D, class R>
inline constexpr bool same_sequence_kind_v = [] {
  if constexpr (is_sequence_v<D> && is_sequence_v<R>) {
    return sequence_traits<D>::dynamic == sequence_traits<R>::dynamic;
  } else {
    return false;
  }
}();

/// Whether a body that returns X can give the direct call's R, decided by the types alone, so
/// that a call knows before running the body whether it must fall back.
template <class R, class X>
constexpr bool result_maps() {
  using D = std::remove_cvref_t<X>;
  if constexpr (std::is_void_v<R>) {
    return true;
  } else if constexpr (is_traced<D>::value) {
    if constexpr (std::is_same_v<D, traced<void>>) {
      return false;
    } else {
      using U = typename D::value_type;
      return std::is_constructible_v<R, const U&> || std::is_constructible_v<R, U&&>;
    }
  } else if constexpr (is_tuple_like<D>::value && is_tuple_like<R>::value) {
    if constexpr (std::tuple_size_v<D> == std::tuple_size_v<R>) {
      return []<std::size_t... I>(std::index_sequence<I...>) {
        return (result_maps<std::tuple_element_t<I, R>, std::tuple_element_t<I, D>>() && ...);
      }
      (std::make_index_sequence<std::tuple_size_v<R>>{});
    } else {
      return false;
    }
  } else if constexpr (same_sequence_kind_v<D, R>) {
    return result_maps<typename R::value_type, typename sequence_traits<D>::element>();
  } else {
    return std::is_constructible_v<R, const D&> && std::is_copy_constructible_v<D>;
  }
}

/// Records how the traced return value `x` maps onto `R` (result_maps<R, X>() must hold).
template <class R, class X>
void collect(trace_context& ctx, const X& x, result_recipe& out) {
  using D = std::remove_cvref_t<X>;
  static_assert(result_maps<R, X>());
  if constexpr (is_traced<D>::value) {
    out.steps.push_back(result_recipe::step::leaf);
    out.leaves.push_back({traced_access::id(x), &make_leaf<R, typename D::value_type>});
  } else if constexpr (is_tuple_like<D>::value && is_tuple_like<R>::value) {
    out.steps.push_back(result_recipe::step::structure);
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (collect<std::tuple_element_t<I, R>>(ctx, std::get<I>(x), out), ...);
    }
    (std::make_index_sequence<std::tuple_size_v<R>>{});
  } else if constexpr (same_sequence_kind_v<D, R>) {
    out.steps.push_back(result_recipe::step::structure);
    if constexpr (sequence_traits<R>::dynamic) out.sizes.push_back(x.size());
    for (const auto& e : x) collect<typename R::value_type>(ctx, e, out);
  } else {
    // A plain value the body computed: a constant of the graph.
    out.steps.push_back(result_recipe::step::leaf);
    value_id c = ctx.ir().add_constant(std::make_shared<const D>(x), typeid(D));
    out.leaves.push_back({c, &make_leaf<R, D>});
  }
}

/// Replays a recipe against the values of a finished run.
class result_builder {
 public:
  result_builder(const result_recipe& r, const finished_values& values) : r_(r), values_(values) {}

  template <class R>
  R build() {
    if constexpr (is_tuple_like<R>::value || is_sequence_v<R>) {
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
    } else if constexpr (sequence_traits<R>::dynamic) {
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
    l.make(buf, values_.value(l.value), l.move);
    R* p = std::launder(reinterpret_cast<R*>(buf));
    struct destroy {
      R* p;
      ~destroy() { p->~R(); }
    } guard{p};
    return std::move(*p);
  }

  const result_recipe& r_;
  const finished_values& values_;
  std::size_t step_ = 0, leaf_ = 0, size_ = 0;
};

/// Builds the call's `R` from the values of a finished run.
template <class R>
R build_result(const result_recipe& recipe, const finished_values& values) {
  if constexpr (!std::is_void_v<R>) {
    return result_builder(recipe, values).template build<R>();
  }
}

}  // namespace xcs::detail
