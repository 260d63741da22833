// SPDX-License-Identifier: MIT
// The argument signature: what a plan is cached by (types and container sizes, never values).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

#include "xcs/detail/traits.hpp"

namespace xcs::detail {

template <class... T>
struct type_list {
  static inline const std::type_info* const types[sizeof...(T) + 1] = {&typeid(T)...};
};

/// The cache key of a call: the decayed argument types plus the size of every `std::vector`
/// argument (and of vectors nested in container arguments), in order. Values never take part,
/// so a thousand different ints trace once; nor do the sizes of strings, maps or spans, nor
/// that of a `std::vector<bool>`, which is traced whole, like a string (sequence_traits).
class signature {
 public:
  template <class... Args>
  static signature of(const Args&... args) {
    using list = type_list<std::decay_t<Args>...>;
    // hash_code() hashes the type's name: once per argument list, not on every call.
    static const std::size_t type_hash = typeid(list).hash_code();
    signature s;
    s.types_ = &typeid(list);
    s.arg_types_ = list::types;
    s.arg_count_ = sizeof...(Args);
    std::uint32_t i = 0;
    (s.add_sizes(i++, args), ...);
    s.hash_ = s.compute_hash(type_hash);
    return s;
  }

  bool operator==(const signature& o) const {
    return hash_ == o.hash_ && *types_ == *o.types_ && sizes_ == o.sizes_;
  }
  std::size_t hash() const noexcept { return hash_; }

  /// Readable form: "(std::string, std::vector<int>[4])".
  std::string to_string() const;
  /// Why `*this` differs from `before`, e.g. "arg 0: std::vector<int>[4], was [3]".
  std::string difference(const signature& before) const;

 private:
  template <class T>
  void add_sizes(std::uint32_t arg, const T& v) {
    using traits = sequence_traits<T>;
    if constexpr (traits::is_sequence) {
      if constexpr (traits::dynamic) {
        sizes_.push_back(v.size());
        owners_.push_back(arg);
      }
      if constexpr (is_sequence_v<typename traits::element>) {
        for (const auto& e : v) add_sizes(arg, e);
      }
    }
  }
  std::size_t compute_hash(std::size_t h) const noexcept {
    for (std::size_t n : sizes_) h = (h ^ n) * 0x100000001b3ULL;
    return h;
  }
  std::string arg_string(std::uint32_t arg) const;

  const std::type_info* types_ = nullptr;
  const std::type_info* const* arg_types_ = nullptr;
  std::uint32_t arg_count_ = 0;
  std::vector<std::size_t> sizes_;
  std::vector<std::uint32_t> owners_;  // the argument each size belongs to
  std::size_t hash_ = 0;
};

}  // namespace xcs::detail

template <>
struct std::hash<xcs::detail::signature> {
  std::size_t operator()(const xcs::detail::signature& s) const noexcept { return s.hash(); }
};
