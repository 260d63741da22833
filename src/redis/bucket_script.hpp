// SPDX-License-Identifier: MIT
// The Redis token bucket's Lua script (taking and reading tokens on the server's clock) and
// its answer.
#pragma once

#include <hiredis/hiredis.h>

#include <chrono>
#include <string>

#include "address.hpp"
#include "script.hpp"

namespace xcs::detail::redis {

/// The script's answer.
struct bucket_answer {
  bool taken = false;
  std::chrono::microseconds wait{0};
  double tokens = 0;
};

/// The script, loaded once (and kept for the process's life: the event thread may use it
/// during static destruction).
const script& bucket_script();
/// Parses the script's reply; false if it is not one.
bool parse_answer(const redisReply* r, bucket_answer& out) noexcept;
/// What a reply that is not the script's answer says, for an error message.
std::string unexpected_reply(const address& where, const redisReply* r);

}  // namespace xcs::detail::redis
