// SPDX-License-Identifier: MIT
// The exact encoding of a cached op's inputs into its cache key, and the cache's kernel table.
#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "xcs/detail/cache_kernel.hpp"
#include "xcs/detail/traits.hpp"

namespace xcs::detail {

// Each value is written with a one-byte tag, and every variable-length part with its length
// first, so the encoding of a list of inputs is unambiguous: ("ab", "c") and ("a", "bc")
// differ, and so do 1 and 1L, or 1 and 1.0f. It is exact (bytes, not text): 0.1 and
// 0.1000000001 differ, and so do -0.0 and 0.0.

inline void append_length(std::string& out, std::size_t n) {
  const auto v = static_cast<std::uint64_t>(n);
  char bytes[sizeof v];
  std::memcpy(bytes, &v, sizeof v);
  out.append(bytes, sizeof v);
}

inline void append_text(std::string& out, std::string_view s) {
  out += 's';
  append_length(out, s.size());
  out.append(s);
}

template <class T>
struct is_std_vector : std::false_type {};
template <class T, class A>
struct is_std_vector<std::vector<T, A>> : std::true_type {};
template <class T>
struct is_std_array : std::false_type {};
template <class T, std::size_t N>
struct is_std_array<std::array<T, N>> : std::true_type {};
template <class T>
struct is_std_optional : std::false_type {};
template <class T>
struct is_std_optional<std::optional<T>> : std::true_type {};
template <class T>
struct is_char_string : std::false_type {};
template <class Tr, class A>
struct is_char_string<std::basic_string<char, Tr, A>> : std::true_type {};
template <class Tr>
struct is_char_string<std::basic_string_view<char, Tr>> : std::true_type {};

/// A type the user encodes: `xcs_cache_key(std::string&, const T&)`, found by ADL.
template <class T>
concept has_cache_key_hook = requires(std::string& out, const T& v) {
  xcs_cache_key(out, v);
};

template <class T>
void no_cache_key() {
  static_assert(always_false_v<T>,
                "xcs::cache: an input of a cached op has no cache key encoding; xcs encodes "
                "arithmetic types, enums, std::string, std::string_view, C strings, and "
                "std::vector, std::array, std::pair, std::tuple and std::optional of those; for "
                "another type T, define void xcs_cache_key(std::string& out, const T& v) in T's "
                "namespace, appending bytes that tell two values apart");
}

/// Appends the encoding of `v` to `out`.
template <class T>
void append_key(std::string& out, const T& v) {
  if constexpr (has_cache_key_hook<T>) {
    // The user's bytes, with their length put in front, so that they cannot run into the next
    // input's.
    out += 'x';
    const std::size_t at = out.size();
    append_length(out, 0);
    xcs_cache_key(out, v);
    const auto n = static_cast<std::uint64_t>(out.size() - at - sizeof(std::uint64_t));
    std::memcpy(out.data() + at, &n, sizeof n);
  } else if constexpr (std::is_same_v<T, bool>) {
    out += v ? 'T' : 'F';
  } else if constexpr (std::is_arithmetic_v<T>) {
    out += std::is_floating_point_v<T> ? 'f' : std::is_signed_v<T> ? 'i' : 'u';
    out += static_cast<char>(sizeof(T));
    char bytes[sizeof(T)];
    std::memcpy(bytes, &v, sizeof(T));
    out.append(bytes, sizeof(T));
  } else if constexpr (std::is_enum_v<T>) {
    out += 'e';
    append_key(out, static_cast<std::underlying_type_t<T>>(v));
  } else if constexpr (is_char_string<T>::value) {
    append_text(out, std::string_view(v.data(), v.size()));
  } else if constexpr (std::is_same_v<T, const char*> || std::is_same_v<T, char*>) {
    append_text(out, v ? std::string_view(v) : std::string_view());
  } else if constexpr (std::is_array_v<T> &&
                       std::is_same_v<std::remove_cv_t<std::remove_extent_t<T>>, char>) {
    append_text(out, std::string_view(v));  // as the traced call passes it: a C string
  } else if constexpr (is_std_vector<T>::value || is_std_array<T>::value) {
    out += 'v';
    append_length(out, v.size());
    for (const auto& e : v) append_key(out, static_cast<const typename T::value_type&>(e));
  } else if constexpr (is_tuple_like<T>::value) {
    out += 't';
    append_length(out, std::tuple_size_v<T>);
    std::apply([&out](const auto&... e) { (append_key(out, e), ...); }, v);
  } else if constexpr (is_std_optional<T>::value) {
    out += v ? 'o' : 'n';
    if (v) append_key(out, *v);
  } else {
    no_cache_key<T>();
  }
}

/// A cached op's result must be a copyable value: a hit is a copy of the stored one.
template <class R>
constexpr bool cacheable_result() {
  static_assert(std::is_object_v<R> && std::is_copy_constructible_v<R>,
                "xcs::cache: a cached op must return a copy-constructible value (not void, not "
                "a reference): a hit returns a copy of the stored result");
  return std::is_object_v<R> && std::is_copy_constructible_v<R>;
}

/// The codec of xcs::memory_cache (and any store that keeps results as values): keys are the
/// exact bytes above; results are not serialized.
struct exact_codec {
  template <class T>
  static void append_key(std::string& out, const T& v) {
    detail::append_key(out, v);
  }
  /// Whether an op returning `R` on inputs `A...` can be cached this way (static_asserts say
  /// why not; an input without an encoding fails in append_key).
  template <class R, class... A>
  static constexpr bool accepts() {
    return cacheable_result<R>();
  }
  template <class R>
  static constexpr const result_codec* results() {
    return nullptr;
  }
};

/// The result codec of `Codec` for results of type `R` (null: not serialized).
template <class Codec, class R>
constexpr const result_codec* result_codec_of() {
  return Codec::template results<R>();
}

/// The cache's kernel table for an op with result `R` and inputs `U...`, keyed by `Codec`.
template <class Codec, class R, class... U>
struct cache_kernel_of {
  static void key(std::string& out, const void* const* in) {
    [&]<std::size_t... I>(std::index_sequence<I...>) {
      (Codec::append_key(out, *static_cast<const U*>(in[I])), ...);
    }
    (std::index_sequence_for<U...>{});
  }
  static void copy(void* to, const void* from) {
    if constexpr (std::is_copy_constructible_v<R>) ::new (to) R(*static_cast<const R*>(from));
  }
  static std::shared_ptr<const void> keep(const void* result) {
    if constexpr (std::is_copy_constructible_v<R>) {
      return std::make_shared<const R>(*static_cast<const R*>(result));
    } else {
      return nullptr;
    }
  }
  static inline const cache_kernel value = {&key, &copy, &keep, result_codec_of<Codec, R>()};
};

/// The cache's table for a kernel of an op made with xcs::cache (`Codec` not void), else null.
template <class Codec, class R, class... U>
constexpr const cache_kernel* cache_kernel_for() {
  if constexpr (!std::is_void_v<Codec>) {
    if constexpr (Codec::template accepts<R, U...>()) {
      return &cache_kernel_of<Codec, R, U...>::value;
    }
    return nullptr;
  } else {
    return nullptr;
  }
}

}  // namespace xcs::detail
