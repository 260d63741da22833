// SPDX-License-Identifier: MIT
// The Redis result store: the scripts, the flights of this process, and the event thread's
// conversation with the server for each flight's leader.
#include "redis_store.hpp"

#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <new>
#include <utility>

#include "event_loop.hpp"
#include "script.hpp"
#include "xcs/error.hpp"

namespace xcs::detail::redis {
namespace {

constexpr std::chrono::milliseconds kFirstPoll{1};
constexpr std::chrono::milliseconds kLongestPoll{50};
/// A marker's life when the op has no timeout.
constexpr std::int64_t kDefaultMarkerMs = 30'000;
constexpr std::string_view kMarkerSuffix{"\0flight", 7};

/// KEYS[1]: the value; ARGV: the marker's key, this owner's token, the marker's life (ms).
/// {1, value}: a hit; {2}: the marker is this owner's now; {0}: another owner's marker lives.
constexpr std::string_view kAskScript = R"lua(
local v = redis.call('GET', KEYS[1])
if v then return {1, v} end
if redis.call('SET', ARGV[1], ARGV[2], 'NX', 'PX', ARGV[3]) then return {2} end
return {0}
)lua";

/// KEYS[1]: the value; ARGV: the marker's key, the owner's token, the value's text, its ttl in
/// ms (0: none). Stores the value, then deletes the marker if it is still this owner's.
constexpr std::string_view kFillScript = R"lua(
if tonumber(ARGV[4]) > 0 then
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
else
  redis.call('SET', KEYS[1], ARGV[3])
end
if redis.call('GET', ARGV[1]) == ARGV[2] then redis.call('DEL', ARGV[1]) end
return 1
)lua";

/// KEYS[1]: a marker; ARGV[1]: the owner's token. Deletes it if it is still this owner's.
constexpr std::string_view kReleaseScript = R"lua(
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
)lua";

enum script_id { ask_script = 0, fill_script = 1, release_script = 2 };

/// Set on the event thread while a store's callback holds a share of it (see ~redis_store).
thread_local bool in_store_callback = false;

/// Runs `fn` on the store `weak` names, if it is still there, marked as a store callback.
template <class Fn>
void with_store(const std::weak_ptr<redis_store>& weak, const Fn& fn) {
  in_store_callback = true;
  if (auto s = weak.lock()) fn(*s);
  in_store_callback = false;  // after `s` let go: its end, if it was the last, did not wait
}

const script& script_of(int which) {
  // Never destroyed: the event thread may use them during static destruction.
  static const script* const scripts[] = {new script(std::string(kAskScript)),
                                          new script(std::string(kFillScript)),
                                          new script(std::string(kReleaseScript))};
  return *scripts[which];
}

std::string unexpected_reply(const address& where, const redisReply* r) {
  if (r->type == REDIS_REPLY_ERROR) {
    return fmt::format("Redis at {}: the cache script failed: {}", where.url,
                       std::string_view(r->str, r->len));
  }
  return fmt::format("Redis at {}: an unexpected reply to the cache script (type {})", where.url,
                     r->type);
}

}  // namespace

redis_store::redis_store(address where, std::string prefix, std::int64_t ttl_ms,
                         redis_options options)
    : where_(std::move(where)),
      prefix_(std::move(prefix)),
      ttl_ms_(ttl_ms),
      ttl_arg_(std::to_string(ttl_ms)),
      options_(options),
      epoch_(event_loop::epoch()) {
  event_loop::get();  // the thread starts now: a failure to start it throws here
  for (int i = 0; i < 3; ++i) (void)script_of(i);
}

std::string redis_store::describe() const {
  return fmt::format("redis {} prefix '{}' ttl {}", where_.url, prefix_,
                     ttl_ms_ == 0 ? std::string("none") : fmt::format("{} ms", ttl_ms_));
}

void redis_store::forget_parent_flights() noexcept {
  if (epoch_ == event_loop::epoch()) return;
  flights_.clear();  // the waiters and the event thread were the parent's
  epoch_ = event_loop::epoch();
}

std::shared_ptr<connection> redis_store::connection_now() const {
  return event_loop::get().connection_to(where_);
}

cache_store::join_result redis_store::join(const std::string& key, const cache_query& q,
                                           cache_waiter& w, std::uint32_t node) {
  std::string why;
  const bool down = !q.codec || connection_now()->down(std::chrono::steady_clock::now(), why);
  {
    std::lock_guard lock(mutex_);
    forget_parent_flights();
    auto [f, first] = flights_.try_emplace(key);
    if (!first) {
      f->second.waiters.push_back({&w, node});
      return {join_status::waiting, nullptr};
    }
    flight& fl = f->second;
    fl.codec = q.codec;
    fl.marker_ms =
        q.owner_timeout_ns > 0 ? (q.owner_timeout_ns + 999'999) / 1'000'000 : kDefaultMarkerMs;
    fl.token = fmt::format("{}-{}-{}", ::getpid(),
                           std::chrono::steady_clock::now().time_since_epoch().count(), ++serial_);
    fl.poll = kFirstPoll;
    // Down (the connection's backoff): the op runs at once, without the cache.
    if (down) {
      if (!q.codec) why = "the op's result cannot be serialized";
      bypass_locked(f, why);
      return {join_status::owner, nullptr};
    }
    fl.waiters.push_back({&w, node});
  }
  try {
    post_ask(key);
  } catch (...) {
    std::lock_guard lock(mutex_);
    flights_.erase(key);  // alone in it: nobody else joined yet, or they are told below
    throw;
  }
  return {join_status::waiting, nullptr};
}

redis_store::waiter redis_store::bypass_locked(flight_map::iterator f, const std::string& why) {
  bypassed_.fetch_add(1, std::memory_order_relaxed);
  if (!down_reported_.exchange(true, std::memory_order_relaxed)) {
    std::fprintf(stderr, "xcs::redis_cache: %s: the cache is bypassed (ops run) until it answers\n",
                 why.c_str());
  }
  flight& fl = f->second;
  fl.step = stage::bypassed;
  fl.token.clear();  // no marker of this process's to release
  waiter owner{nullptr, 0};
  if (!fl.waiters.empty()) {
    owner = fl.waiters.front();
    fl.waiters.erase(fl.waiters.begin());
  }
  return owner;
}

void redis_store::note_up() noexcept {
  if (down_reported_.exchange(false, std::memory_order_relaxed)) {
    std::fprintf(stderr, "xcs::redis_cache: Redis at %s answers again\n", where_.url.c_str());
  }
}

void redis_store::post_ask(const std::string& key) {
  event_loop::get().post(
      [weak = weak_from_this(), key] { with_store(weak, [&](redis_store& s) { s.ask(key); }); });
}

void redis_store::post_script(int which, const std::string& key, std::string value,
                              std::string token) {
  // Fire and forget (a failure is the next ask's to find), but counted, so that the store's
  // end waits for it: a process that exits right after its last fill still stores it. The task
  // holds what it needs by value, not the store, which may be ending.
  const std::shared_ptr<write_count> writes = writes_;
  {
    std::lock_guard lock(writes->mutex);
    ++writes->pending;
  }
  auto written = [writes](const redisReply*, const std::string&) { writes->done(); };
  try {
    event_loop::get().post([where = where_, options = options_, ttl = ttl_arg_, which,
                            value_key = prefix_ + key, value = std::move(value),
                            token = std::move(token), written]() mutable {
      try {
        const std::string marker = value_key + std::string(kMarkerSuffix);
        const auto deadline = std::chrono::steady_clock::now() + options.command_timeout;
        std::shared_ptr<connection> conn = event_loop::get().connection_to(where);
        if (which == fill_script) {
          script_of(fill_script)
              .run(*conn, value_key, {marker, token, value, ttl}, deadline, options.command_timeout,
                   options.connect_timeout, written);
        } else {
          script_of(release_script)
              .run(*conn, marker, {token}, deadline, options.command_timeout,
                   options.connect_timeout, written);
        }
      } catch (...) {
        written(nullptr, std::string());  // no memory: the marker expires by itself
      }
    });
  } catch (...) {
    writes->done();
    throw;
  }
}

void redis_store::write_count::done() noexcept {
  std::lock_guard lock(mutex);
  --pending;
  cv.notify_all();  // under the lock: the store's end may free nothing but its share of this
}

redis_store::~redis_store() {
  // Not on the event thread (a callback that held the last share): it could not answer.
  if (in_store_callback) return;
  // Every write is answered or failed by its deadline; the margin is for a loaded machine.
  const auto give_up = std::chrono::steady_clock::now() + options_.connect_timeout +
                       options_.command_timeout + std::chrono::seconds(1);
  std::unique_lock lock(writes_->mutex);
  writes_->cv.wait_until(lock, give_up, [&] { return writes_->pending == 0; });
}

void redis_store::fill(const std::string& key, std::shared_ptr<const void> value) noexcept {
  std::vector<waiter> waiting;
  std::string text;
  std::string token;
  bool store = false;
  {
    std::lock_guard lock(mutex_);
    auto f = flights_.find(key);
    if (f == flights_.end()) return;
    waiting = std::move(f->second.waiters);
    store = f->second.step == stage::owned;
    token = f->second.token;  // empty when the marker is another owner's
    if (store) {
      try {
        text = f->second.codec->encode(value.get());
      } catch (...) {
        store = false;  // the codec failed, or no memory: not kept; the marker is released
      }
    }
    flights_.erase(f);
  }
  if (store || !token.empty()) {
    try {
      post_script(store ? fill_script : release_script, key, std::move(text), std::move(token));
    } catch (...) {
      // No memory: the marker expires by itself.
    }
  }
  for (const waiter& w : waiting) w.party->cache_filled(w.node, value);
}

void redis_store::abandon(const std::string& key) noexcept {
  waiter next{nullptr, 0};
  std::string token;
  bool ask_again = false;
  {
    std::lock_guard lock(mutex_);
    auto f = flights_.find(key);
    if (f == flights_.end()) return;
    flight& fl = f->second;
    if (fl.step == stage::owned) token = fl.token;
    if (fl.waiters.empty()) {
      flights_.erase(f);
    } else if (fl.step == stage::bypassed) {
      next = fl.waiters.front();  // Redis was not used: the next waiter computes it
      fl.waiters.erase(fl.waiters.begin());
    } else {
      // Errors are not cached: the marker goes at once and the next waiter asks afresh (in
      // the order of the connection: after the release).
      fl.step = stage::asking;
      fl.poll = kFirstPoll;
      ask_again = true;
    }
  }
  try {
    if (!token.empty()) post_script(release_script, key, std::string(), std::move(token));
    if (ask_again) post_ask(key);
  } catch (...) {
    // No memory to ask: the next waiter computes it without Redis.
    if (ask_again) {
      std::lock_guard lock(mutex_);
      auto f = flights_.find(key);
      if (f != flights_.end()) next = bypass_locked(f, "out of memory");
    }
  }
  if (next.party) next.party->cache_owned(next.node);
}

bool redis_store::withdraw(const std::string& key, cache_waiter& w, std::uint32_t node) noexcept {
  std::lock_guard lock(mutex_);
  auto f = flights_.find(key);
  if (f == flights_.end()) return false;
  auto& list = f->second.waiters;
  auto at = std::find_if(list.begin(), list.end(),
                         [&](const waiter& x) { return x.party == &w && x.node == node; });
  if (at == list.end()) return false;
  // The leader leaving an ask: the reply (or timer) finds the next one, or nobody, and copes.
  list.erase(at);
  return true;
}

// ---- the event thread ---------------------------------------------------------------------

redis_store::flight_map::iterator redis_store::asking_locked(const std::string& key) noexcept {
  auto f = flights_.find(key);
  if (f == flights_.end() || f->second.step != stage::asking) return flights_.end();
  if (f->second.waiters.empty()) {
    flights_.erase(f);  // everyone withdrew
    return flights_.end();
  }
  return f;
}

void redis_store::ask(const std::string& key) noexcept {
  std::string token;
  std::int64_t marker_ms = 0;
  {
    std::lock_guard lock(mutex_);
    auto f = asking_locked(key);
    if (f == flights_.end()) return;
    token = f->second.token;
    marker_ms = f->second.marker_ms;
  }
  try {
    const std::string value_key = prefix_ + key;
    const std::string marker = value_key + std::string(kMarkerSuffix);
    const auto deadline = std::chrono::steady_clock::now() + options_.command_timeout;
    script_of(ask_script)
        .run(*connection_now(), value_key, {marker, token, std::to_string(marker_ms)}, deadline,
             options_.command_timeout, options_.connect_timeout,
             [weak = weak_from_this(), key](const redisReply* r, const std::string& failure) {
               with_store(weak, [&](redis_store& s) { s.on_answer(key, r, failure); });
             });
  } catch (...) {
    on_failure(key, "out of memory");
  }
}

void redis_store::on_answer(const std::string& key, const redisReply* r,
                            const std::string& failure) noexcept {
  if (!r) return on_failure(key, failure);
  if (r->type == REDIS_REPLY_ARRAY && r->elements >= 1 &&
      r->element[0]->type == REDIS_REPLY_INTEGER) {
    const long long what = r->element[0]->integer;
    if (what == 1 && r->elements == 2 && r->element[1]->type == REDIS_REPLY_STRING) {
      note_up();
      return on_hit(key, std::string_view(r->element[1]->str, r->element[1]->len));
    }
    if (what == 2) {
      note_up();
      return on_marked(key);
    }
    if (what == 0) {
      note_up();
      return on_owned_elsewhere(key);
    }
  }
  on_failure(key, unexpected_reply(where_, r));
}

void redis_store::on_hit(const std::string& key, std::string_view text) noexcept {
  std::vector<waiter> waiting;
  std::shared_ptr<const void> value;
  {
    std::lock_guard lock(mutex_);
    auto f = asking_locked(key);
    if (f == flights_.end()) return;
    try {
      value = f->second.codec->decode(text);
    } catch (...) {
      // Not this op's JSON (an older result type, or no memory): a miss; the op runs, and its
      // result replaces the value (without the marker, which another owner may hold).
      f->second.step = stage::owned;
      f->second.token.clear();
      waiter owner = f->second.waiters.front();
      f->second.waiters.erase(f->second.waiters.begin());
      waiting.push_back(owner);
    }
    if (value) {
      waiting = std::move(f->second.waiters);
      flights_.erase(f);
    }
  }
  if (!value) {
    if (!waiting.empty()) waiting.front().party->cache_owned(waiting.front().node);
    return;
  }
  for (const waiter& w : waiting) w.party->cache_filled(w.node, value);
}

void redis_store::on_marked(const std::string& key) noexcept {
  waiter owner{nullptr, 0};
  std::string token;
  {
    std::lock_guard lock(mutex_);
    auto f = flights_.find(key);
    if (f == flights_.end() || f->second.step != stage::asking) return;
    flight& fl = f->second;
    fl.step = stage::owned;
    if (fl.waiters.empty()) {
      token = fl.token;  // everyone withdrew: give the key back at once
      flights_.erase(f);
    } else {
      owner = fl.waiters.front();
      fl.waiters.erase(fl.waiters.begin());
    }
  }
  if (owner.party) {
    owner.party->cache_owned(owner.node);
    return;
  }
  try {
    post_script(release_script, key, std::string(), std::move(token));
  } catch (...) {
    // No memory: the marker expires by itself.
  }
}

void redis_store::on_owned_elsewhere(const std::string& key) noexcept {
  std::chrono::milliseconds poll{0};
  {
    std::lock_guard lock(mutex_);
    auto f = asking_locked(key);
    if (f == flights_.end()) return;
    poll = f->second.poll;
    f->second.poll = std::min(poll * 2, kLongestPoll);
  }
  try {
    event_loop::get().add_timer(
        std::chrono::steady_clock::now() + poll,
        [weak = weak_from_this(), key] { with_store(weak, [&](redis_store& s) { s.ask(key); }); });
  } catch (...) {
    on_failure(key, "out of memory");
  }
}

void redis_store::on_failure(const std::string& key, const std::string& why) noexcept {
  waiter owner{nullptr, 0};
  {
    std::lock_guard lock(mutex_);
    auto f = asking_locked(key);
    if (f == flights_.end()) return;
    owner = bypass_locked(f, why);
  }
  owner.party->cache_owned(owner.node);
}

}  // namespace xcs::detail::redis

namespace xcs::detail {

std::shared_ptr<cache_store> make_redis_store(std::string url, std::string prefix, double ttl_ms,
                                              redis_options options) {
  redis::address where = redis::parse_url(url);
  if (!(ttl_ms >= 0)) {
    throw error(fmt::format("xcs::redis_cache: the ttl must not be negative (got {} ms)", ttl_ms));
  }
  if (options.connect_timeout.count() <= 0 || options.command_timeout.count() <= 0) {
    throw error(fmt::format(
        "xcs::redis_cache: the timeouts must be above 0 (got connect {} ms, command {} ms)",
        options.connect_timeout.count(), options.command_timeout.count()));
  }
  // Whole milliseconds, rounded up (a ttl above zero never becomes "no expiry"); beyond what
  // Redis takes (int64 ms), centuries, kept at its most.
  const double most = static_cast<double>(std::numeric_limits<std::int64_t>::max() / 4);
  const auto ms = static_cast<std::int64_t>(std::ceil(std::min(ttl_ms, most)));
  return std::make_shared<redis::redis_store>(std::move(where), std::move(prefix), ms, options);
}

std::uint64_t redis_store_bypassed(const cache_store& store) noexcept {
  const auto* s = dynamic_cast<const redis::redis_store*>(&store);
  return s ? s->bypassed() : 0;
}

}  // namespace xcs::detail
