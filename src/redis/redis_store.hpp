// SPDX-License-Identifier: MIT
// The store of xcs::redis_cache: results kept in Redis as JSON, with single-flight in this
// process (a flight per key) and across processes (a SET NX marker per key).
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "address.hpp"
#include "connection.hpp"
#include "xcs/detail/cache_store.hpp"
#include "xcs/redis.hpp"

namespace xcs::detail::redis {

/// A flight is a key some instance of this process asked for and nobody has settled. Its first
/// waiter is its *leader*: for it, the event thread runs the ask script, which returns the value
/// (a hit: every waiter gets it), or sets the key's marker (`SET NX PX`: this process owns the
/// key and the leader computes it), or neither (another process owns it: the leader asks again
/// after a backoff on the event thread's timer, 1 ms doubling to 50 ms). So every waiter, the
/// leader too, holds no thread while Redis answers or another process computes.
///
/// When Redis cannot be used (the connection is down or fails the request, a reply that is not
/// the script's), the flight is *bypassed*: the leader owns the key without a marker, and its
/// result goes to this process's waiters and not to Redis. Each bypassed ownership is counted.
///
/// Redis keys: the value at prefix + key, the marker at prefix + key + "\0flight" (a key's
/// encoding never ends in "\0flight": inputs end in '\n', names and versions are length-
/// prefixed). Owners are told apart by a token (pid, time, serial) so that an owner deletes only
/// its own marker, never one a later owner set after it expired.
///
/// Callbacks to waiters are made outside the lock; the event thread's callbacks hold the store
/// weakly. A child after fork() forgets the parent's flights.
class redis_store final : public cache_store, public std::enable_shared_from_this<redis_store> {
 public:
  redis_store(address where, std::string prefix, std::int64_t ttl_ms, redis_options options);
  /// Waits for the writes still on their way (fills, releases), at most the timeouts and a
  /// second, so that a process that exits right after computing a key still stores it.
  ~redis_store() override;

  std::shared_ptr<const void> find(std::string_view) override { return nullptr; }
  join_result join(const std::string& key, const cache_query& q, cache_waiter& w,
                   std::uint32_t node) override;
  void fill(const std::string& key, std::shared_ptr<const void> value) noexcept override;
  void abandon(const std::string& key) noexcept override;
  bool withdraw(const std::string& key, cache_waiter& w, std::uint32_t node) noexcept override;
  std::size_t size() const override { return 0; }
  std::string describe() const override;

  std::uint64_t bypassed() const noexcept { return bypassed_.load(std::memory_order_relaxed); }

 private:
  struct waiter {
    cache_waiter* party;
    std::uint32_t node;
  };
  enum class stage : std::uint8_t {
    asking,    // the leader's ask is posted, on its way, or due on a timer
    owned,     // this process owns the marker: an owner computes
    bypassed,  // Redis could not be used: an owner computes without it
  };
  struct flight {
    std::vector<waiter> waiters;  // the leader first; an owner is no longer listed
    stage step = stage::asking;
    const result_codec* codec = nullptr;
    std::int64_t marker_ms = 0;
    std::string token;
    std::chrono::milliseconds poll{0};  // the next backoff while another process owns the key
  };
  using flight_map = std::unordered_map<std::string, flight>;
  /// The writes posted and not yet answered (or failed), shared with their tasks.
  struct write_count {
    std::mutex mutex;  // guards pending
    std::condition_variable cv;
    std::int64_t pending = 0;
    void done() noexcept;
  };

  void forget_parent_flights() noexcept;
  /// The flight of `key` if it is asking and someone waits in it, else end(); erases one that
  /// nobody waits in any more. Under mutex_.
  flight_map::iterator asking_locked(const std::string& key) noexcept;
  std::shared_ptr<connection> connection_now() const;
  void post_ask(const std::string& key);
  void post_script(int which, const std::string& key, std::string value, std::string token);
  waiter bypass_locked(flight_map::iterator f, const std::string& why);
  void note_up() noexcept;

  // The event thread's side.
  void ask(const std::string& key) noexcept;
  void on_answer(const std::string& key, const redisReply* r, const std::string& failure) noexcept;
  void on_hit(const std::string& key, std::string_view text) noexcept;
  void on_marked(const std::string& key) noexcept;
  void on_owned_elsewhere(const std::string& key) noexcept;
  void on_failure(const std::string& key, const std::string& why) noexcept;

  const address where_;
  const std::string prefix_;
  const std::int64_t ttl_ms_;
  const std::string ttl_arg_;
  const redis_options options_;

  /// Guards flights_, serial_ and epoch_. Never held while calling a waiter or the loop.
  mutable std::mutex mutex_;
  flight_map flights_;
  std::uint64_t serial_ = 0;
  std::uint64_t epoch_;

  const std::shared_ptr<write_count> writes_ = std::make_shared<write_count>();
  std::atomic<std::uint64_t> bypassed_{0};  // relaxed: a statistic
  /// Whether the last use of Redis failed (the bypass was reported): one line per change.
  std::atomic<bool> down_reported_{false};
};

}  // namespace xcs::detail::redis
