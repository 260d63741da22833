// SPDX-License-Identifier: MIT
// A call's own copy of its arguments, so that an op abandoned at a deadline or after a failure
// never reads the caller's objects once the call has returned.
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

namespace xcs::detail {

/// Copies a call's arguments (of one signature's types) into storage the run owns.
struct arg_copier {
  std::size_t size;
  std::size_t align;
  /// Copy-constructs the arguments at `src` into `dst` and writes their addresses to `out`.
  void (*copy)(void* dst, const void* const* src, const void** out);
  void (*destroy)(void* at) noexcept;
};

template <class... A>
struct arg_copy {
  using tuple = std::tuple<A...>;
  static void copy(void* dst, const void* const* src, const void** out) {
    copy_at(dst, src, out, std::index_sequence_for<A...>{});
  }
  template <std::size_t... I>
  static void copy_at(void* dst, const void* const* src, const void** out,
                      std::index_sequence<I...>) {
    auto* t = ::new (dst) tuple(*static_cast<const A*>(src[I])...);
    ((out[I] = &std::get<I>(*t)), ...);
  }
  static void destroy(void* at) noexcept { static_cast<tuple*>(at)->~tuple(); }
  static inline const arg_copier value{sizeof(tuple), alignof(tuple), &copy, &destroy};
};

/// The copier of arguments `A...`, or null when one of them cannot be copied (then the ops
/// that read them directly are waited for even when the call ends early).
template <class... A>
const arg_copier* copier_of() noexcept {
  if constexpr ((std::is_copy_constructible_v<std::decay_t<A>> && ...)) {
    return &arg_copy<std::decay_t<A>...>::value;
  } else {
    return nullptr;
  }
}

}  // namespace xcs::detail
