// SPDX-License-Identifier: MIT
// The argument signature: what a plan is cached by (types and container sizes, never values).
#pragma once

#include <array>
#include <cstddef>
#include <functional>
#include <string>
#include <type_traits>
#include <typeinfo>
#include <vector>

namespace xcs {

/// The cache key of a call: the decayed argument types plus the size of every container
/// argument (recursively, for nested containers), in order. Values never take part, so a
/// thousand different ints trace once.
class signature {
 public:
  template <class... Args>
  static signature of(const Args&... args) {
    signature s;
    s.types_ = &typeid(type_list<std::decay_t<Args>...>);
    (s.add_sizes(args), ...);
    s.hash_ = s.compute_hash();
    return s;
  }

  bool operator==(const signature& o) const {
    return hash_ == o.hash_ && *types_ == *o.types_ && sizes_ == o.sizes_;
  }
  std::size_t hash() const noexcept { return hash_; }
  const std::vector<std::size_t>& sizes() const noexcept { return sizes_; }
  const std::type_info& types() const noexcept { return *types_; }

  /// Readable form: "(std::string, std::vector<int>[4])".
  std::string to_string() const;
  /// Why `*this` differs from `before`, e.g. "arg 0: std::vector<int>[4], was [3]".
  std::string difference(const signature& before) const;

 private:
  template <class... T>
  struct type_list {};

  template <class T>
  void add_sizes(const T& v) {
    if constexpr (requires {
                    v.size();
                    v.begin();
                    typename T::value_type;
                  } &&
                  !std::is_same_v<T, std::string>) {
      sizes_.push_back(v.size());
      using E = typename T::value_type;
      if constexpr (requires(const E& e) {
                      e.size();
                      e.begin();
                    } &&
                    !std::is_same_v<E, std::string>) {
        for (const auto& e : v) add_sizes(e);
      }
    }
  }
  std::size_t compute_hash() const noexcept {
    std::size_t h = types_->hash_code();
    for (std::size_t n : sizes_) h = (h ^ n) * 0x100000001b3ULL;
    return h;
  }

  const std::type_info* types_ = nullptr;
  std::vector<std::size_t> sizes_;
  std::size_t hash_ = 0;
};

}  // namespace xcs

template <>
struct std::hash<xcs::signature> {
  std::size_t operator()(const xcs::signature& s) const noexcept { return s.hash(); }
};
