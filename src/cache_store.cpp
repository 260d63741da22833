// SPDX-License-Identifier: MIT
// The in-process result cache (xcs::memory_cache): an LRU with a TTL and single-flight, and a
// direct call's turn at a cache.
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <condition_variable>
#include <limits>
#include <list>
#include <mutex>
#include <unordered_map>
#include <utility>
#include <vector>

#include "xcs/cache.hpp"
#include "xcs/detail/cache_store.hpp"
#include "xcs/detail/call_limits.hpp"
#include "xcs/detail/op_runtime.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {
namespace {

/// An LRU of at most max_entries_ entries, each expiring ttl_ after it was stored (0: never),
/// and the keys in flight with their waiters. One mutex guards it all: a hit is a hash lookup
/// and a list splice under it, well under a microsecond. Callbacks to waiters are made after
/// the mutex is released, from the lists taken out under it.
class memory_store final : public cache_store {
 public:
  memory_store(std::size_t max_entries, std::chrono::nanoseconds ttl)
      : max_entries_(max_entries), ttl_(ttl) {}

  std::shared_ptr<const void> find(std::string_view key) override {
    std::lock_guard lock(mutex_);
    return find_locked(key);
  }

  join_result join(const std::string& key, const cache_query&, cache_waiter& w,
                   std::uint32_t node) override {
    std::lock_guard lock(mutex_);
    if (auto v = find_locked(key)) return {join_status::hit, std::move(v)};
    auto [it, first] = flights_.try_emplace(key);
    if (first) return {join_status::owner, nullptr};
    it->second.push_back({&w, node});
    return {join_status::waiting, nullptr};
  }

  void fill(const std::string& key, std::shared_ptr<const void> value) noexcept override {
    std::vector<waiter> waiting;
    {
      std::lock_guard lock(mutex_);
      try {
        insert_locked(key, value);
      } catch (...) {
        // No memory for the entry: not kept, but the waiters still get the owner's result.
      }
      auto it = flights_.find(key);
      if (it != flights_.end()) {
        waiting = std::move(it->second);
        flights_.erase(it);
      }
    }
    for (const waiter& w : waiting) w.party->cache_filled(w.node, value);
  }

  void abandon(const std::string& key) noexcept override {
    waiter next{nullptr, 0};
    {
      std::lock_guard lock(mutex_);
      auto it = flights_.find(key);
      if (it == flights_.end()) return;
      if (it->second.empty()) {
        flights_.erase(it);
        return;
      }
      // The first waiter in turn owns the key now; the others wait for it.
      next = it->second.front();
      it->second.erase(it->second.begin());
    }
    next.party->cache_owned(next.node);
  }

  bool withdraw(const std::string& key, cache_waiter& w, std::uint32_t node) noexcept override {
    std::lock_guard lock(mutex_);
    auto it = flights_.find(key);
    if (it == flights_.end()) return false;
    auto& list = it->second;
    for (auto x = list.begin(); x != list.end(); ++x) {
      if (x->party == &w && x->node == node) {
        list.erase(x);
        return true;
      }
    }
    return false;
  }

  std::size_t size() const override {
    std::lock_guard lock(mutex_);
    return lru_.size();
  }

  std::string describe() const override {
    return fmt::format("{} entries ttl {}", max_entries_,
                       ttl_.count() == 0 ? std::string("none") : describe_ns(ttl_.count()));
  }

 private:
  struct entry {
    std::string key;
    std::shared_ptr<const void> value;
    std::chrono::steady_clock::time_point stored;
  };
  struct waiter {
    cache_waiter* party;
    std::uint32_t node;
  };

  std::shared_ptr<const void> find_locked(std::string_view key) {
    auto it = index_.find(key);
    if (it == index_.end()) return nullptr;
    auto e = it->second;
    if (ttl_.count() != 0 && std::chrono::steady_clock::now() - e->stored >= ttl_) {
      index_.erase(it);
      lru_.erase(e);
      return nullptr;
    }
    lru_.splice(lru_.begin(), lru_, e);  // the most recent
    return e->value;
  }

  void insert_locked(const std::string& key, const std::shared_ptr<const void>& value) {
    const auto now = std::chrono::steady_clock::now();
    if (auto it = index_.find(key); it != index_.end()) {
      it->second->value = value;
      it->second->stored = now;
      lru_.splice(lru_.begin(), lru_, it->second);
      return;
    }
    // The bound holds at every insert: the least recently used entries go first.
    while (lru_.size() >= max_entries_) {
      index_.erase(lru_.back().key);
      lru_.pop_back();
    }
    lru_.push_front({key, value, now});
    try {
      index_.emplace(lru_.front().key, lru_.begin());
    } catch (...) {
      lru_.pop_front();
      throw;
    }
  }

  const std::size_t max_entries_;
  const std::chrono::nanoseconds ttl_;
  mutable std::mutex mutex_;  // guards lru_, index_ and flights_
  std::list<entry> lru_;      // the most recently used first
  std::unordered_map<std::string_view, std::list<entry>::iterator> index_;  // keys in lru_
  /// Keys being computed, each with its waiters in the order they came (its owner is not
  /// listed: it ends the flight with fill or abandon).
  std::unordered_map<std::string, std::vector<waiter>> flights_;
};

/// A direct call waiting for another instance's result: its thread sleeps until a callback
/// comes, or the call's deadline or stop.
struct blocked_waiter final : cache_waiter {
  std::mutex m;
  std::condition_variable_any cv;
  bool decided = false;  // guarded by m
  std::shared_ptr<const void> value;

  void cache_filled(std::uint32_t, std::shared_ptr<const void> v) noexcept override {
    std::lock_guard lock(m);
    value = std::move(v);
    decided = true;
    cv.notify_all();  // under the lock: the waiter may go (and destroy this) once it is free
  }
  void cache_owned(std::uint32_t) noexcept override {
    std::lock_guard lock(m);
    decided = true;
    cv.notify_all();
  }
};

}  // namespace

std::shared_ptr<cache_store> make_memory_store(std::size_t max_entries, std::int64_t ttl_ns) {
  return std::make_shared<memory_store>(max_entries, std::chrono::nanoseconds(ttl_ns));
}

direct_flight::direct_flight(const op_runtime& p, std::string key, const result_codec* codec,
                             const call_limits* limits)
    : store_(*p.policy->cache), key_(std::move(key)) {
  value_ = store_.find(key_);
  if (!value_) wait(p, codec, limits);
}

void direct_flight::wait(const op_runtime& p, const result_codec* codec,
                         const call_limits* limits) {
  blocked_waiter w;
  cache_store::join_result r = store_.join(key_, p.policy->query(codec), w, 0);
  if (r.status == cache_store::join_status::hit) {
    value_ = std::move(r.value);
    return;
  }
  if (r.status == cache_store::join_status::owner) {
    owner_ = true;
    return;
  }
  const steady_time deadline = limits ? limits->deadline : steady_time::max();
  std::stop_token stop = limits ? limits->stop : std::stop_token();
  std::unique_lock lock(w.m);
  const bool decided = deadline == steady_time::max()
                           ? w.cv.wait(lock, stop, [&] { return w.decided; })
                           : w.cv.wait_until(lock, stop, deadline, [&] { return w.decided; });
  if (!decided) {
    lock.unlock();
    if (!store_.withdraw(key_, w, 0)) {
      // The callback is being made: wait for it (it is short), so `w` outlives it.
      lock.lock();
      w.cv.wait(lock, [&] { return w.decided; });
      lock.unlock();
      if (!w.value) store_.abandon(key_);  // handed the key: hand it on
    }
    limits->check_op(p.name);  // throws: the deadline passed or stop was requested
    throw error(fmt::format("xcs: op '{}': the wait for a cached result ended", p.name));
  }
  if (w.value) {
    value_ = std::move(w.value);
  } else {
    owner_ = true;  // the owner failed: this call computes the key
  }
}

direct_flight::~direct_flight() {
  if (owner_) store_.abandon(key_);
}

void direct_flight::fill(std::shared_ptr<const void> result) noexcept {
  owner_ = false;
  store_.fill(key_, std::move(result));
}

}  // namespace xcs::detail

namespace xcs {

result_cache detail::memory_cache_ns(std::size_t max_entries, double ttl_ns) {
  if (max_entries == 0) {
    throw error("xcs::memory_cache: max_entries must be at least 1 (got 0)");
  }
  if (!(ttl_ns >= 0)) {
    throw error(fmt::format("xcs::memory_cache: the ttl must not be negative (got {})",
                            std::isfinite(ttl_ns) ? describe_ns(static_cast<std::int64_t>(ttl_ns))
                                                  : fmt::format("{} ns", ttl_ns)));
  }
  // A ttl beyond what an int64 of nanoseconds holds (centuries) is kept at its most.
  const double most = static_cast<double>(std::numeric_limits<std::int64_t>::max() / 2);
  const auto ns = static_cast<std::int64_t>(std::ceil(std::min(ttl_ns, most)));
  return result_cache(make_memory_store(max_entries, ns));
}

}  // namespace xcs
