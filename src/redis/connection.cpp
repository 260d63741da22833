// SPDX-License-Identifier: MIT
// A pipelined, non-blocking hiredis connection driven by the event thread.
#include "connection.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <memory>
#include <utility>

namespace xcs::detail::redis {
namespace {

constexpr std::chrono::milliseconds kFirstBackoff{100};
constexpr std::chrono::milliseconds kMaxBackoff{1000};

std::int64_t ns_of(steady_time t) noexcept {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(t.time_since_epoch()).count();
}

struct reply_deleter {
  void operator()(void* reply) const noexcept { freeReplyObject(reply); }
};
using reply_ptr = std::unique_ptr<void, reply_deleter>;

}  // namespace

std::string format_command(const std::vector<std::string_view>& args) {
  std::string out = fmt::format("*{}\r\n", args.size());
  for (std::string_view a : args) {
    fmt::format_to(std::back_inserter(out), "${}\r\n", a.size());
    out.append(a);
    out += "\r\n";
  }
  return out;
}

connection::connection(address where) : where_(std::move(where)), backoff_(kFirstBackoff) {}

connection::~connection() {
  if (ctx_) redisFree(ctx_);
}

bool connection::down(steady_time now, std::string& why) const {
  const std::int64_t until = down_until_ns_.load(std::memory_order_acquire);
  if (ns_of(now) >= until) return false;
  std::lock_guard lock(why_mutex_);
  why = fmt::format("{} (next try in {} ms)", why_, (until - ns_of(now) + 999'999) / 1'000'000);
  return true;
}

short connection::events() const noexcept {
  switch (state_) {
    case state::connecting:
      return POLLOUT;
    case state::ready:
      return static_cast<short>(POLLIN | (want_write_ ? POLLOUT : 0));
    case state::closed:
      break;
  }
  return 0;
}

steady_time connection::next_deadline() const noexcept {
  steady_time next = steady_time::max();
  if (state_ == state::connecting) next = connect_deadline_;
  for (const request& r : unsent_) next = std::min(next, r.deadline);
  for (const request& r : sent_) next = std::min(next, r.deadline);
  return next;
}

void connection::submit(request r) {
  switch (state_) {
    case state::closed: {
      const steady_time now = std::chrono::steady_clock::now();
      std::string why;
      if (down(now, why)) {
        r.done(nullptr, why);
        return;
      }
      unsent_.push_back(std::move(r));
      start_connecting(unsent_.back().connect_timeout, now);
      return;
    }
    case state::connecting:
      unsent_.push_back(std::move(r));
      return;
    case state::ready:
      append(std::move(r));
      if (!dispatching_) flush();
      return;
  }
}

void connection::start_connecting(std::chrono::milliseconds timeout, steady_time now) {
  // Resolves the host here, on the event thread; a name that takes long to resolve holds it up.
  ctx_ = redisConnectNonBlock(where_.host.c_str(), where_.port);
  if (!ctx_) {
    fail_now("cannot connect: out of memory");
    return;
  }
  if (ctx_->err) {
    fail_now(fmt::format("cannot connect: {}", ctx_->errstr));
    return;
  }
  // Not into programs the user's children exec.
  ::fcntl(ctx_->fd, F_SETFD, ::fcntl(ctx_->fd, F_GETFD) | FD_CLOEXEC);
  fd_.store(ctx_->fd, std::memory_order_relaxed);
  ++generation_;
  state_ = state::connecting;
  connect_timeout_ = timeout;
  connect_deadline_ = now + timeout;
  if (where_.db != 0) {
    // Ahead of every request: SELECT's reply comes first; an error drops the connection.
    const std::string db = std::to_string(where_.db);
    unsent_.push_front(request{format_command({"SELECT", db}), unsent_.front().deadline,
                               unsent_.front().command_timeout, timeout,
                               [this](const redisReply* reply, const std::string&) {
                                 if (reply && reply->type == REDIS_REPLY_ERROR) {
                                   fail(fmt::format("SELECT {}: {}", where_.db, reply->str));
                                 }
                               }});
  }
}

void connection::become_ready() {
  state_ = state::ready;
  while (!unsent_.empty()) {
    request r = std::move(unsent_.front());
    unsent_.pop_front();
    append(std::move(r));
  }
  flush();
}

void connection::append(request r) {
  if (redisAppendFormattedCommand(ctx_, r.command.data(), r.command.size()) != REDIS_OK) {
    r.done(nullptr, fmt::format("Redis at {}: cannot send a command: out of memory", where_.url));
    return;
  }
  r.command = std::string();  // in hiredis's buffer now
  sent_.push_back(std::move(r));
  want_write_ = true;
}

void connection::flush() {
  if (state_ != state::ready || !want_write_) return;
  int done = 0;
  if (redisBufferWrite(ctx_, &done) != REDIS_OK) {
    fail(fmt::format("cannot send: {}", ctx_->errstr));
    return;
  }
  want_write_ = done == 0;
}

void connection::on_ready(short revents) {
  if (state_ == state::connecting) {
    if (!(revents & (POLLOUT | POLLERR | POLLHUP))) return;
    int err = 0;
    socklen_t len = sizeof err;
    if (::getsockopt(ctx_->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0) err = errno;
    if (err != 0) {
      fail(fmt::format("cannot connect: {}", std::strerror(err)));
      return;
    }
    become_ready();
    return;
  }
  if (state_ != state::ready) return;
  if (revents & (POLLIN | POLLERR | POLLHUP)) {
    if (redisBufferRead(ctx_) != REDIS_OK) {
      fail(ctx_->errstr);
      return;
    }
    read_replies();
  }
  if (state_ == state::ready && (revents & POLLOUT)) flush();
}

void connection::read_replies() {
  dispatching_ = true;
  for (;;) {
    void* raw = nullptr;
    if (redisGetReplyFromReader(ctx_, &raw) != REDIS_OK) {
      pending_failure_ = fmt::format("protocol error: {}", ctx_->errstr);
      break;
    }
    if (!raw) break;
    reply_ptr reply(raw);
    if (sent_.empty()) {
      pending_failure_ = "a reply to no request";
      break;
    }
    request r = std::move(sent_.front());
    sent_.pop_front();
    backoff_ = kFirstBackoff;  // the server answers
    r.done(static_cast<const redisReply*>(reply.get()), std::string());
    if (!pending_failure_.empty()) break;
  }
  dispatching_ = false;
  if (!pending_failure_.empty()) {
    fail_now(std::exchange(pending_failure_, std::string()));
    return;
  }
  flush();  // what the callbacks appended
}

void connection::on_time(steady_time now) {
  if (state_ == state::closed) return;
  if (state_ == state::connecting && now >= connect_deadline_) {
    fail_now(fmt::format("cannot connect within {} ms", connect_timeout_.count()));
    return;
  }
  for (const auto* queue : {&unsent_, &sent_}) {
    for (const request& r : *queue) {
      if (now >= r.deadline) {
        fail_now(fmt::format("no reply within {} ms", r.command_timeout.count()));
        return;
      }
    }
  }
}

void connection::fail(std::string reason) {
  if (dispatching_) {
    if (pending_failure_.empty()) pending_failure_ = std::move(reason);
    return;
  }
  fail_now(reason);
}

void connection::fail_now(const std::string& reason) {
  const std::string why = fmt::format("Redis at {}: {}", where_.url, reason);
  if (ctx_) {
    redisFree(ctx_);
    ctx_ = nullptr;
  }
  fd_.store(-1, std::memory_order_relaxed);
  state_ = state::closed;
  want_write_ = false;
  if (sent_.empty() && unsent_.empty()) {
    // Nobody waited: an idle connection the server closed (its `timeout`, a restart). Nothing
    // says the server is down, so the next request connects at once.
    return;
  }
  const steady_time until = std::chrono::steady_clock::now() + backoff_;
  backoff_ = std::min(backoff_ * 2, kMaxBackoff);
  {
    std::lock_guard lock(why_mutex_);
    why_ = why;
  }
  down_until_ns_.store(ns_of(until), std::memory_order_release);
  // Taken out first: a callback that submits again finds the connection closed and down, and is
  // answered at once, not added to these.
  std::deque<request> failed = std::move(sent_);
  for (request& r : unsent_) failed.push_back(std::move(r));
  sent_.clear();
  unsent_.clear();
  for (request& r : failed) r.done(nullptr, why);
}

void connection::close_in_child() noexcept {
  const int fd = fd_.load(std::memory_order_relaxed);
  if (fd >= 0) ::close(fd);
}

}  // namespace xcs::detail::redis
