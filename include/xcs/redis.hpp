// SPDX-License-Identifier: MIT
// The optional component xcs::redis: rate limits whose bucket every process shares, in Redis.
#pragma once

#include <chrono>
#include <string>

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

}  // namespace xcs
