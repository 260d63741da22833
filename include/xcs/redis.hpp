// SPDX-License-Identifier: MIT
// The optional component xcs::redis: rate limits whose bucket every process shares, and a
// result cache every process shares, in Redis.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <type_traits>
#include <utility>

#include "xcs/cache.hpp"
#include "xcs/detail/cache_key.hpp"
#include "xcs/rate_limit.hpp"

namespace xcs {

/// How long a Redis-backed limiter waits for its server. Both must be above zero.
struct redis_options {
  /// Connecting: a TCP connection not made by then fails (and every request waiting for it).
  std::chrono::milliseconds connect_timeout{100};
  /// A command without a reply by this long after it was asked for fails, with every other
  /// request on its connection, and the connection is closed (a server that stopped answering
  /// is treated as down).
  std::chrono::milliseconds command_timeout{100};
};

/// A rate limiter whose bucket lives in Redis under `key`, shared by every process (and every
/// limiter) that uses the same URL and key: N replicas that each make
/// `redis_rate_limiter(url, "llm-api", 100, 10)` start at most 100 limited calls a second
/// between them, in bursts of up to 10, rather than N times that. The bucket refills
/// continuously at `per_second` tokens a second up to `burst` and starts full; a Lua script
/// updates it atomically on the server, by the server's clock. Every process sharing a key
/// should use the same rate and burst. Weights (`xcs::rate_limit(limiter, weight)`) draw
/// that many tokens, as in process.
///
/// `url` is `redis://host:port` or `redis://host:port/db` (the port defaults to 6379). One
/// connection per process per URL serves every limiter on it, driven by one event thread of
/// the component; an op waiting for tokens holds no thread. Making a limiter does not connect:
/// the first request does.
///
/// When Redis cannot be reached or does not answer within the timeouts, the ops waiting for
/// tokens and the ops that ask next fail with an xcs::error that names the URL and the key
/// (a direct call throws it); there is no in-process stand-in. A later request connects again
/// (after a backoff of 0.1 s, doubling up to 1 s while it stays down), so a server that comes
/// back is used again by the same limiter. In a child after fork() the limiter connects anew
/// and forgets the parent's waiters.
///
/// Throws xcs::error naming the bad value when the URL is malformed, the key is empty,
/// `per_second` is not above 0 or not finite, `burst` is below 1 or not finite, or a timeout
/// is not above zero; std::system_error when the component's thread cannot start. Never
/// throws because Redis is down. Thread-safe.
///
///   auto api = xcs::redis_rate_limiter("redis://10.0.0.5:6379", "llm-api", 100, 10);
///   auto ask = xcs::op("ask", call_model, xcs::rate_limit(api));  // shared by all replicas
///   auto f = xcs::jit([](auto q) { return ask(q); });
rate_limiter redis_rate_limiter(std::string url, std::string key, double per_second, double burst);

/// The same, with the timeouts given.
rate_limiter redis_rate_limiter(std::string url, std::string key, double per_second, double burst,
                                redis_options options);

namespace detail {

/// A type nlohmann/json can write (`to_json`, found by ADL, or built in).
template <class T>
concept json_writable = std::is_constructible_v<nlohmann::json, const T&>;
/// A type nlohmann/json can read back (`from_json`, found by ADL, or built in).
template <class T>
concept json_readable = requires(const nlohmann::json& j) {
  j.template get<T>();
};

/// The codec of xcs::redis_cache: each input is its JSON text and a newline (JSON text has no
/// raw newline, so ("ab", "c") and ("a", "bc") differ); a result is its JSON text.
struct json_codec {
  template <class T>
  static void append_key(std::string& out, const T& v) {
    out += nlohmann::json(v).dump();  // throws nlohmann::json::type_error on invalid UTF-8
    out += '\n';
  }
  template <class R, class... A>
  static constexpr bool accepts() {
    static_assert(json_writable<R> && json_readable<R>,
                  "xcs::redis_cache: the result of a cached op must convert to and from JSON: "
                  "define to_json(nlohmann::json&, const R&) and from_json(const nlohmann::json&, "
                  "R&) in R's namespace (nlohmann/json's ADL convention)");
    static_assert((json_writable<std::decay_t<A>> && ...),
                  "xcs::redis_cache: every input of a cached op must convert to JSON (its key): "
                  "define to_json(nlohmann::json&, const T&) in T's namespace");
    return cacheable_result<R>() && json_writable<R> && json_readable<R> &&
           (json_writable<std::decay_t<A>> && ...);
  }
  template <class R>
  struct table {
    static std::string encode(const void* v) {
      return nlohmann::json(*static_cast<const R*>(v)).dump();
    }
    static std::shared_ptr<const void> decode(std::string_view text) {
      return std::make_shared<const R>(nlohmann::json::parse(text).template get<R>());
    }
    static inline const result_codec value = {&encode, &decode};
  };
  template <class R>
  static constexpr const result_codec* results() {
    return &table<R>::value;
  }
};

/// The store of xcs::redis_cache, `ttl_ms` in milliseconds (0: no expiry). Checked here.
std::shared_ptr<cache_store> make_redis_store(std::string url, std::string prefix, double ttl_ms,
                                              redis_options options);
/// Calls of ops on `store` that ran without the cache because Redis could not be used.
std::uint64_t redis_store_bypassed(const cache_store& store) noexcept;

}  // namespace detail

/// A result cache kept in Redis (xcs::redis_cache): give it to xcs::cache. Copies share one
/// store. Thread-safe.
class redis_result_cache {
 public:
  explicit redis_result_cache(std::shared_ptr<detail::cache_store> store)
      : cache_(std::move(store)) {}
  /// The calls of ops on this cache that ran the op without it because Redis was down, did not
  /// answer within the command timeout, or failed a command (each one ran the op).
  std::uint64_t bypassed() const noexcept {
    return detail::redis_store_bypassed(*cache_.shared_store());
  }
  const result_cache& cache() const noexcept { return cache_; }

 private:
  result_cache cache_;
};

/// A result cache shared by every process that uses the same URL and prefix: a key is `prefix`,
/// the op's name and xcs::cache_version, and its inputs as JSON; a value is the result as JSON
/// (nlohmann/json: ADL `to_json` / `from_json`; a type without them does not compile), kept for
/// `ttl` (any std::chrono duration, rounded up to milliseconds; zero: no expiry). Errors are not
/// cached. Concurrent misses of one key make one call: in a process by single-flight, across
/// processes by a `SET NX` marker that expires after the op's timeout times its attempts (or
/// 30 s without a timeout), so a crashed owner does not block the key; the others poll for its
/// result on the component's event thread (1 ms doubling to 50 ms) holding no thread (a
/// direct call blocks its own). An owner whose op fails deletes its marker at once.
///
/// When Redis is down, does not answer within the command timeout, or fails a command, the
/// cache is bypassed: the op runs, `bypassed()` counts it, and one line on stderr says so
/// (and one more when Redis answers again); the next call asks Redis again (after the
/// connection's backoff of 0.1 s to 1 s), so a server that comes back is used again. Making one
/// does not connect. Writes go out on the event thread; the end of the last copy (and of the
/// ops made with it) waits for those on their way, at most the timeouts and a second. Throws
/// xcs::error naming the value for a malformed URL or a negative ttl.
///
///   auto answers = xcs::redis_cache("redis://10.0.0.5:6379", "llm:", std::chrono::hours(24));
///   auto ask = xcs::op("ask", call_model, xcs::cache(answers), xcs::cache_version("v2"));
template <class Rep, class Period>
redis_result_cache redis_cache(std::string url, std::string prefix,
                               std::chrono::duration<Rep, Period> ttl, redis_options options = {}) {
  return redis_result_cache(
      detail::make_redis_store(std::move(url), std::move(prefix),
                               std::chrono::duration<double, std::milli>(ttl).count(), options));
}

/// Option for xcs::op and xcs::async_op: results kept in Redis (see xcs::redis_cache).
inline basic_cache_t<detail::json_codec> cache(const redis_result_cache& store) {
  return {store.cache()};
}

}  // namespace xcs
