// SPDX-License-Identifier: MIT
// An array that one thread grows while others read its existing elements: the node tables of
// a run whose graph is still being recorded.
#pragma once

#include <algorithm>
#include <atomic>
#include <bit>
#include <cstddef>
#include <cstdint>

namespace xcs::detail {

/// Elements never move: the array is a fixed directory of segments of doubling size, the
/// first one `first_capacity` long (a power of two), so that a run whose size is known up
/// front (a plan's) has one segment and indexes it directly.
///
/// Thread-safety: only the owner calls `grow_to` and `reset`. Other threads may access any
/// element below a size the owner published to them after growing (by a release store or a
/// read-modify-write they then read): the segment pointers are written before that.
template <class T>
class grow_array {
 public:
  grow_array() = default;
  explicit grow_array(std::uint32_t first_capacity) { reset(first_capacity); }
  ~grow_array() { free_segments(); }
  grow_array(const grow_array&) = delete;
  grow_array& operator=(const grow_array&) = delete;

  /// Drops every segment and makes the first one hold at least `first_capacity` elements.
  void reset(std::uint32_t first_capacity) {
    free_segments();
    shift_ = static_cast<std::uint32_t>(
        std::countr_zero(std::bit_ceil(std::max<std::uint32_t>(first_capacity, 16))));
    capacity_ = 0;
    grow_to(1);
  }

  /// Owner: makes room for `n` elements (value-initialized). Throws std::bad_alloc.
  void grow_to(std::uint32_t n) {
    while (capacity_ < n) {
      std::uint32_t k = segment_count();
      std::size_t size = std::size_t{1} << (shift_ + k);
      segments_[k] = new T[size]();
      capacity_ = static_cast<std::uint32_t>(std::min<std::size_t>(
          (std::size_t{1} << shift_) * ((std::size_t{1} << (k + 1)) - 1), ~std::uint32_t{0}));
    }
  }
  std::uint32_t capacity() const noexcept { return capacity_; }

  /// The first index at or after `first` where `count` elements lie in one segment.
  std::uint32_t contiguous_from(std::uint32_t first, std::uint32_t count) const noexcept {
    std::uint32_t k = first < (std::uint32_t{1} << shift_)
                          ? 0
                          : static_cast<std::uint32_t>(std::bit_width((first >> shift_) + 1)) - 1;
    for (;; ++k) {
      std::uint64_t start = (std::uint64_t{1} << shift_) * ((std::uint64_t{1} << k) - 1);
      std::uint64_t end = start + (std::uint64_t{1} << (shift_ + k));
      std::uint64_t from = std::max<std::uint64_t>(first, start);
      if (from + count <= end) return static_cast<std::uint32_t>(from);
    }
  }

  T& operator[](std::uint32_t i) const noexcept {
    if (i < (std::uint32_t{1} << shift_)) return segments_[0][i];
    std::uint32_t q = (i >> shift_) + 1;
    std::uint32_t k = static_cast<std::uint32_t>(std::bit_width(q)) - 1;
    return segments_[k][i - (((std::uint32_t{1} << k) - 1) << shift_)];
  }

 private:
  static constexpr std::uint32_t kMaxSegments = 32;
  std::uint32_t segment_count() const noexcept {
    std::uint32_t k = 0;
    while (k < kMaxSegments && segments_[k]) ++k;
    return k;
  }
  void free_segments() noexcept {
    for (T*& s : segments_) {
      delete[] s;
      s = nullptr;
    }
  }

  T* segments_[kMaxSegments] = {};
  std::uint32_t shift_ = 4;
  std::uint32_t capacity_ = 0;
};

}  // namespace xcs::detail
