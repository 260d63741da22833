// SPDX-License-Identifier: MIT
// Where a cached op's results are kept: the interface the run engine and the direct call draw
// on, with single-flight. In process, a memory_store; across processes, a store kept in Redis.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>

#include "xcs/detail/cache_kernel.hpp"

namespace xcs::detail {

/// What join() is told about the op asking: how to serialize its result (null: it cannot be),
/// and how long its owner may take (its timeout times its attempts; 0 if it has no timeout),
/// for a store whose flights are seen by other processes.
struct cache_query {
  const result_codec* codec = nullptr;
  std::int64_t owner_timeout_ns = 0;
};

/// A party waiting for a key that another instance is computing (in flight): a run that parked
/// a node, or a direct call that blocks its thread. Exactly one of the two is called per
/// (w, node) that joined as a waiter and was not withdrawn, never with the store's lock held
/// and never from inside the store's join(); neither may destroy the store.
class cache_waiter {
 public:
  /// The owner succeeded: `value` is its result (a copy of it, the store's).
  virtual void cache_filled(std::uint32_t node, std::shared_ptr<const void> value) noexcept = 0;
  /// The owner failed (or gave up): this waiter owns the key now, and computes it.
  virtual void cache_owned(std::uint32_t node) noexcept = 0;

 protected:
  ~cache_waiter() = default;
};

/// A result cache with single-flight: a key is a string (the op's name, its version, its
/// inputs encoded exactly); a value is a type-erased copy of a result. At most one instance
/// computes a key at a time (its *owner*); the others wait for it holding no thread (a run's
/// node) or blocking theirs (a direct call). The owner ends with `fill` (a result) or
/// `abandon` (an error, a skip, a stop), which hands the key to the next waiter in turn.
/// A store is shared (xcs::result_cache is a handle to one) and thread-safe.
class cache_store {
 public:
  /// How join() went: a hit (value set), this party owns the key, or it waits.
  enum class join_status : std::uint8_t { hit, owner, waiting };
  struct join_result {
    join_status status;
    std::shared_ptr<const void> value;  ///< hit only
  };

  virtual ~cache_store() = default;

  /// The value kept for `key`, made the most recent; null on a miss (nothing is marked).
  virtual std::shared_ptr<const void> find(std::string_view key) = 0;
  /// A hit, or else: if no one computes `key`, the caller owns it now (`owner`: it must end
  /// with fill or abandon); otherwise (w, node) waits and one of w's callbacks follows, never
  /// from inside this call. Throws std::bad_alloc without waiting or owning.
  virtual join_result join(const std::string& key, const cache_query& q, cache_waiter& w,
                           std::uint32_t node) = 0;
  /// The owner of `key` succeeded: keeps `value` and hands it to every waiter.
  virtual void fill(const std::string& key, std::shared_ptr<const void> value) noexcept = 0;
  /// The owner of `key` failed: the first waiter owns it now (cache_owned), or, with none,
  /// the key is no longer in flight. Errors are not cached.
  virtual void abandon(const std::string& key) noexcept = 0;
  /// Removes a waiting (w, node) whose callback has not been decided: true if removed
  /// (nothing will be called for it). False if it was not waiting or its callback has been or
  /// is being made (the caller copes).
  virtual bool withdraw(const std::string& key, cache_waiter& w, std::uint32_t node) noexcept = 0;

  /// Entries kept now (a remote store: those this process knows of, or 0).
  virtual std::size_t size() const = 0;
  /// The store as explain() lists it after "cache ": "100 entries ttl 10 min".
  virtual std::string describe() const = 0;
};

/// The in-process store of xcs::memory_cache: an LRU of at most `max_entries` entries, each
/// expiring `ttl_ns` after it was stored (0: never). Checked by xcs::memory_cache.
std::shared_ptr<cache_store> make_memory_store(std::size_t max_entries, std::int64_t ttl_ns);

}  // namespace xcs::detail
