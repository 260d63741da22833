// SPDX-License-Identifier: MIT
// The Redis token bucket's Lua script and the parsing of its answer (see bucket_script.hpp).
#include "bucket_script.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <string>
#include <string_view>

namespace xcs::detail::redis {
namespace {

/// KEYS[1]: the bucket, a hash {tokens, at}; `at` is when it was last refilled, in microseconds
/// of the server's clock. ARGV: the rate (tokens a second), the burst, n (the tokens wanted; 0
/// only reads), and how far ahead (microseconds) n may be taken. Returns {taken, wait, tokens}:
/// taken 1 with wait 0: taken now; taken 1 with wait w: taken, due in w microseconds; taken 0:
/// not taken, there in w microseconds. `tokens` (a string: Lua numbers become integers) is what
/// is left. A missing key is a full bucket, so the key expires once it would be full again. A
/// wait is capped at 10^12 µs (11 days; the head asks again then), so that it stays an integer.
constexpr std::string_view kBucketScript = R"lua(
if redis.replicate_commands then redis.replicate_commands() end
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local n = tonumber(ARGV[3])
local ahead = tonumber(ARGV[4])
local time = redis.call('TIME')
local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1])
local at = tonumber(state[2])
if tokens == nil or at == nil then
  tokens = burst
  at = now
elseif now > at then
  tokens = math.min(burst, tokens + (now - at) * rate / 1000000)
  at = now
end
if n == 0 then
  return {1, 0, string.format('%.17g', tokens)}
end
local wait = 0
if tokens < n - 0.000001 * math.max(1, n) then
  wait = math.min(math.ceil((n - tokens) * 1000000 / rate), 1e12)
  if wait > ahead then
    return {0, wait, string.format('%.17g', tokens)}
  end
end
tokens = tokens - n
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'at', string.format('%.0f', at))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {1, wait, string.format('%.17g', tokens)}
)lua";

}  // namespace

const script& bucket_script() {
  // Never destroyed: the event thread may use it during static destruction.
  static const script* const s = new script(std::string(kBucketScript));
  return *s;
}

bool parse_answer(const redisReply* r, bucket_answer& out) noexcept {
  if (r->type != REDIS_REPLY_ARRAY || r->elements != 3) return false;
  const redisReply* taken = r->element[0];
  const redisReply* wait = r->element[1];
  const redisReply* tokens = r->element[2];
  if (taken->type != REDIS_REPLY_INTEGER || wait->type != REDIS_REPLY_INTEGER ||
      tokens->type != REDIS_REPLY_STRING) {
    return false;
  }
  out.taken = taken->integer == 1;
  out.wait = std::chrono::microseconds(std::max<long long>(0, wait->integer));
  out.tokens = std::strtod(tokens->str, nullptr);
  return true;
}

std::string unexpected_reply(const address& where, const redisReply* r) {
  if (r->type == REDIS_REPLY_ERROR) {
    return fmt::format("Redis at {}: the rate-limit script failed: {}", where.url,
                       std::string_view(r->str, r->len));
  }
  return fmt::format("Redis at {}: an unexpected reply to the rate-limit script (type {})",
                     where.url, r->type);
}

}  // namespace xcs::detail::redis
