// SPDX-License-Identifier: MIT
// What a cached op's kernel adds for its result cache: static tables of functions, one per
// instantiation, that key its inputs and copy or serialize its result. Part of the op's
// identity, like its kernel; the store that uses them is in cache_store.hpp.
#pragma once

#include <memory>
#include <string>
#include <string_view>

namespace xcs::detail {

/// How a store that serializes (Redis) writes and reads a cached op's result: one static
/// table per result type and codec. Both may throw (the codec's errors, std::bad_alloc).
struct result_codec {
  /// The text of the result at `value`.
  std::string (*encode)(const void* value);
  /// A result read back from `text` (a shared copy, as the store keeps it).
  std::shared_ptr<const void> (*decode)(std::string_view text);
};

/// What a cached op's kernel adds for the cache: the key of an instance's inputs, and copies
/// of its result (a hit is a copy; the store keeps one of its own). One static table per
/// instantiation, like the kernel that points to it.
struct cache_kernel {
  /// Appends the exact encoding of the inputs to `out` (see xcs/cache.hpp).
  void (*key)(std::string& out, const void* const* inputs);
  /// Copy-constructs the result at `to` from the value at `from`.
  void (*copy)(void* to, const void* from);
  /// A shared copy of the result at `value`, for the store.
  std::shared_ptr<const void> (*keep)(const void* value);
  /// The result's text form, for a store that serializes; null for the exact codec.
  const result_codec* codec;
};

}  // namespace xcs::detail
