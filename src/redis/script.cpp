// SPDX-License-Identifier: MIT
// EVALSHA with the EVAL fallback.
#include "script.hpp"

#include <new>
#include <utility>
#include <vector>

#include "sha1.hpp"

namespace xcs::detail::redis {
namespace {

std::string command_of(std::string_view verb, std::string_view body, std::string_view key,
                       const std::vector<std::string>& args) {
  std::vector<std::string_view> parts{verb, body, "1", key};
  parts.insert(parts.end(), args.begin(), args.end());
  return format_command(parts);
}

bool is_noscript(const redisReply* reply) noexcept {
  return reply && reply->type == REDIS_REPLY_ERROR && reply->str &&
         std::string_view(reply->str, reply->len).substr(0, 8) == "NOSCRIPT";
}

}  // namespace

script::script(std::string source) : source_(std::move(source)), sha1_(sha1_hex(source_)) {}

void script::run(connection& c, std::string_view key, std::initializer_list<std::string_view> args,
                 steady_time deadline, std::chrono::milliseconds command_timeout,
                 std::chrono::milliseconds connect_timeout, reply_fn done) const {
  std::vector<std::string> kept(args.begin(), args.end());
  std::string command = command_of("EVALSHA", sha1_, key, kept);
  // The connection lives as long as the loop, and the script as long as its user's reply.
  reply_fn first = [this, &c, key = std::string(key), kept = std::move(kept), deadline,
                    command_timeout, connect_timeout, done = std::move(done)](
                       const redisReply* reply, const std::string& failure) mutable {
    if (!is_noscript(reply)) {
      done(reply, failure);
      return;
    }
    std::string whole;
    try {
      whole = command_of("EVAL", source_, key, kept);
    } catch (const std::bad_alloc&) {
      done(nullptr, "cannot send the script: out of memory");
      return;
    }
    c.submit(
        request{std::move(whole), deadline, command_timeout, connect_timeout, std::move(done)});
  };
  c.submit(
      request{std::move(command), deadline, command_timeout, connect_timeout, std::move(first)});
}

}  // namespace xcs::detail::redis
