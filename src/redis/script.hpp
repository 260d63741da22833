// SPDX-License-Identifier: MIT
// A Lua script run on the server by its SHA-1 (EVALSHA), sent whole (EVAL) when the server
// does not have it.
#pragma once

#include <initializer_list>
#include <string>
#include <string_view>

#include "connection.hpp"

namespace xcs::detail::redis {

/// A script and its SHA-1. Immutable; thread-safe.
class script {
 public:
  explicit script(std::string source);

  const std::string& sha1() const noexcept { return sha1_; }

  /// Event thread only: runs the script on `c` with one key and `args` (EVALSHA). If the server
  /// answers NOSCRIPT (it restarted, or SCRIPT FLUSH ran), sends it once more as EVAL, which
  /// also stores it, before `done` hears anything. `deadline` is the first send's, and the
  /// second's too. The script must outlive the reply. Throws std::bad_alloc.
  void run(connection& c, std::string_view key, std::initializer_list<std::string_view> args,
           steady_time deadline, std::chrono::milliseconds command_timeout,
           std::chrono::milliseconds connect_timeout, reply_fn done) const;

 private:
  std::string source_;
  std::string sha1_;
};

}  // namespace xcs::detail::redis
