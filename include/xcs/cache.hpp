// SPDX-License-Identifier: MIT
// The result cache: xcs::cache(store) and xcs::cache_version(v), op options, and the stores.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "xcs/detail/cache_store.hpp"

namespace xcs {

/// A result cache for `xcs::cache(store)`: a handle to a shared store, so copies share one
/// set of entries (and every op given a copy uses them). Thread-safe. Made by
/// `xcs::memory_cache` (in this process) or `xcs::redis_cache` (<xcs/redis.hpp>, shared by
/// every process).
///
///     auto answers = xcs::memory_cache(10'000, std::chrono::hours(1));
///     auto ask = xcs::op("ask", call_model, xcs::cache(answers), xcs::cache_version("v2"));
///     std::size_t kept = answers.size();
class result_cache {
 public:
  /// A cache over another store (how xcs::redis_cache makes one).
  explicit result_cache(std::shared_ptr<detail::cache_store> store) : store_(std::move(store)) {}

  /// Entries kept now.
  std::size_t size() const { return store_->size(); }

  /// The shared store (for the engine).
  std::shared_ptr<detail::cache_store> shared_store() const noexcept { return store_; }

 private:
  std::shared_ptr<detail::cache_store> store_;
};

namespace detail {
/// xcs::memory_cache's checks and store, `ttl_ns` in nanoseconds.
result_cache memory_cache_ns(std::size_t max_entries, double ttl_ns);
}  // namespace detail

/// An in-process result cache: at most `max_entries` entries, the least recently used dropped
/// at each insert beyond that (a hit makes an entry the most recent); each entry expires `ttl`
/// after it was stored, or never if `ttl` is zero. Any std::chrono duration. Throws
/// xcs::error naming the value if `max_entries` is 0 or `ttl` is negative.
template <class Rep, class Period>
result_cache memory_cache(std::size_t max_entries, std::chrono::duration<Rep, Period> ttl) {
  return detail::memory_cache_ns(max_entries,
                                 std::chrono::duration<double, std::nano>(ttl).count());
}

/// Option for `xcs::op` and `xcs::async_op`: the op is pure (the same inputs always give the
/// same result, and calling it has no effect that matters), so its results are kept in `store`
/// and a call with inputs already seen returns a copy of the kept result without running it.
/// The key is the op's name, its `xcs::cache_version` and its inputs encoded exactly (see
/// docs/api.md, "Result cache"). Errors are not cached. Concurrent calls of one key make one
/// call of the op (single-flight); the others wait for its result. A hit takes no rate-limit
/// token and no concurrency permit, and runs no retry. The op's result must be copyable.
/// `Codec` says how keys (and, for a store that serializes, results) are encoded: the exact
/// bytes (xcs::memory_cache), or JSON (xcs::redis_cache, <xcs/redis.hpp>).
template <class Codec>
struct basic_cache_t {
  result_cache store;
};
namespace detail {
struct exact_codec;
}  // namespace detail
using cache_t = basic_cache_t<detail::exact_codec>;
inline cache_t cache(result_cache store) { return {std::move(store)}; }

namespace detail {
/// Whether T is an xcs::cache option; `type` is its codec.
template <class T>
struct is_cache_option : std::false_type {};
template <class Codec>
struct is_cache_option<basic_cache_t<Codec>> : std::true_type {
  using type = Codec;
};
}  // namespace detail

/// Option beside `xcs::cache`: a version string that is part of every key, to change when the
/// op's meaning changes (a new prompt, a new model), so older results are not used.
struct cache_version_t {
  std::string version;
};
inline cache_version_t cache_version(std::string version) { return {std::move(version)}; }

}  // namespace xcs
