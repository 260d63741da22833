// SPDX-License-Identifier: MIT
// One connection to a Redis server, shared by every user of its URL in this process: requests
// pipelined in order, replies matched in order, timeouts, and the backoff after a failure.
#pragma once

#include <hiredis/hiredis.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "address.hpp"

namespace xcs::detail::redis {

using steady_time = std::chrono::steady_clock::time_point;

/// What a request's sender is told, on the event thread: the reply (hiredis's, valid during the
/// call; an error reply is a reply), or, with `reply` null, why none will come ("Redis at URL:
/// ..."). Called exactly once per request; must not throw.
using reply_fn = std::function<void(const redisReply* reply, const std::string& failure)>;

struct request {
  std::string command;   ///< the protocol's form of the command (format_command)
  steady_time deadline;  ///< no reply by then: the server is not answering
  std::chrono::milliseconds command_timeout;  ///< for the message when the deadline passes
  std::chrono::milliseconds connect_timeout;  ///< if this request has to connect
  reply_fn done;
};

/// A command in the protocol's form (RESP), its arguments binary-safe. Throws std::bad_alloc.
std::string format_command(const std::vector<std::string_view>& args);

/// A connection to one address, made on the first request and again on the first request
/// after a failure's backoff. Requests are pipelined: each is written at once and the replies
/// come back in order. A failure (cannot connect within the connect timeout, a request without
/// a reply by its deadline, the server closing the connection, a protocol error) fails every
/// request on it, closes it, and starts a backoff of 0.1 s doubling to 1 s, during which new
/// requests fail at once with the same reason; the first reply after a reconnect ends it. An
/// idle connection that the server closes is only closed: the next request connects again.
///
/// Everything but down() and close_in_child() belongs to the event thread (event_loop), which
/// polls fd() for events() until next_deadline().
class connection {
 public:
  explicit connection(address where);
  ~connection();
  connection(const connection&) = delete;
  connection& operator=(const connection&) = delete;

  const address& where() const noexcept { return where_; }

  /// Thread-safe. True, with the failure and when the next try is due in `why`, while the last
  /// failure's backoff lasts: a request now would fail at once.
  bool down(steady_time now, std::string& why) const;

  // ---- the event thread only ----

  /// Sends `r` (connecting first if need be). r.done may be called before this returns (when
  /// the connection is down): hold no lock that it takes.
  void submit(request r);
  /// The socket to poll (-1 when closed) and what to poll it for.
  int fd() const noexcept { return ctx_ ? ctx_->fd : -1; }
  short events() const noexcept;
  /// Counts connections made, so that the poll loop does not hand one socket's events to the
  /// next socket of the same connection.
  std::uint64_t generation() const noexcept { return generation_; }
  /// When on_time() has something to fail; steady_time::max() if never.
  steady_time next_deadline() const noexcept;
  void on_ready(short revents);
  void on_time(steady_time now);

  /// In a child after fork(): closes the parent's socket in this process and touches nothing
  /// else (the event thread that owns the rest is the parent's). Async-signal-safe.
  void close_in_child() noexcept;

 private:
  enum class state { closed, connecting, ready };

  void start_connecting(std::chrono::milliseconds timeout, steady_time now);
  void become_ready();
  void append(request r);
  void flush();
  void read_replies();
  void fail(std::string reason);
  void fail_now(const std::string& reason);

  const address where_;
  redisContext* ctx_ = nullptr;
  /// The socket, for close_in_child (a copy of ctx_->fd that a forked child can read safely).
  std::atomic<int> fd_{-1};
  state state_ = state::closed;
  std::uint64_t generation_ = 0;
  steady_time connect_deadline_;
  std::chrono::milliseconds connect_timeout_{0};
  std::deque<request> unsent_;  // waiting for the connection
  std::deque<request> sent_;    // written (or in hiredis's buffer), in the order replies come
  bool want_write_ = false;
  /// Replies are being handed out: a callback's submit only appends, and a failure is noted in
  /// pending_failure_ and dealt with once the hand-out is over (hiredis's reader is in use).
  bool dispatching_ = false;
  std::string pending_failure_;
  std::chrono::milliseconds backoff_;

  /// The backoff, for other threads: until when (steady clock, ns) requests fail at once, and
  /// why. why_ is written under why_mutex_ before down_until_ns_ is stored (release), so a
  /// reader that sees the time (acquire) and then takes the lock reads the matching reason.
  std::atomic<std::int64_t> down_until_ns_{0};
  mutable std::mutex why_mutex_;
  std::string why_;
};

}  // namespace xcs::detail::redis
