// SPDX-License-Identifier: MIT
// A token bucket kept in Redis and shared by every process that uses its key: the local queue
// of this process's waiters, whose head asks the server for its tokens.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>

#include "address.hpp"
#include "connection.hpp"
#include "xcs/detail/token_source.hpp"
#include "xcs/detail/token_waiters.hpp"
#include "xcs/redis.hpp"

namespace xcs::detail::redis {

class event_loop;

/// The bucket: the hash at `key` holds its tokens and when they were last refilled, by the
/// server's clock (TIME), and a Lua script refills and takes them atomically. The key expires
/// once the bucket would be full again, so idle buckets vanish (a missing key is a full bucket).
///
/// This process's waiters, nodes and blocked direct calls, wait in one local queue, lowest
/// order key first, as in token_bucket. Only the head asks the server, one request at a time,
/// on the event thread: if its tokens are there, they are taken and it is granted; if they will
/// be there within a second (kMaxReserve), they are taken ahead (the bucket goes below zero)
/// and it is granted when they are due, by a timer of the event thread; otherwise it asks again
/// when they are a second away. Then the next waiter goes. So a process's waiters hold no
/// thread, and processes sharing a key queue for it at the server in the order they ask.
///
/// A failure (the connection's: unreachable, no reply within the timeout) fails every waiter
/// queued here with an xcs::error naming the URL and key; while the connection's backoff lasts,
/// new requests throw it at once. A waiter withdrawn (or a blocked call that gives up) after its
/// tokens were taken at the server does not give them back: the budget errs on the safe side.
///
/// Grants and failures are told outside the bucket's lock, on the event thread. A child after
/// fork() forgets the parent's waiters and uses a connection of its own; a bucket whose lock a
/// parent's thread held at the fork cannot be used in the child. Made with make_shared (the
/// event thread's callbacks hold it weakly).
class redis_bucket final : public token_source, public std::enable_shared_from_this<redis_bucket> {
 public:
  /// Arguments checked by redis_rate_limiter. Starts the event thread; does not connect.
  redis_bucket(address where, std::string key, double per_second, double burst,
               redis_options options);
  ~redis_bucket() override;
  redis_bucket(const redis_bucket&) = delete;
  redis_bucket& operator=(const redis_bucket&) = delete;

  double per_second() const noexcept override { return per_second_; }
  double burst() const noexcept override { return burst_; }
  /// Asks the server (blocking this thread up to the timeouts). Throws xcs::error when it
  /// cannot.
  double available() const override;
  std::size_t waiting() const noexcept override;

  /// Never takes tokens at once (the server must be asked): queues and returns false, but for
  /// 0 tokens with nobody queued (true). Throws xcs::error naming the URL while the connection
  /// is down, std::bad_alloc.
  bool acquire_or_queue(token_waiter& w, std::uint32_t node, double tokens,
                        std::uint64_t order) override;
  bool withdraw(token_waiter& w, std::uint32_t node) noexcept override;
  /// Throws xcs::error naming the URL when the server fails while it waits, or is down.
  bool acquire_blocking(double tokens, steady_time deadline, std::stop_token stop) override;

 private:
  struct blocked_call {
    std::condition_variable cv;
    // Set under the bucket's lock, which the setter holds while it notifies.
    bool granted = false;
    bool stopped = false;
    std::exception_ptr failed;
  };
  struct queued {
    token_waiter* waiter;  // a node's run, or null for a blocked call
    std::uint32_t node;
    blocked_call* call;
    double tokens;
    steady_time deadline;  // a blocked call's; max for nodes
  };
  using waiter_queue = std::map<waiter_key, queued>;
  /// A waiter taken out of the queue with its answer: a node's, to be told after the lock.
  struct answered_node {
    token_waiter* waiter = nullptr;
    std::uint32_t node = 0;
  };
  /// What the head of the queue is doing. idle: nothing (the queue is empty, or the next
  /// arrival posts an ask); asking: a request is on its way or about to be; waiting: a timer of
  /// the event thread runs at the head's reserved time (reserved_) or when it should ask again.
  enum class head_state { idle, asking, waiting };

  void forget_parent_waiters() noexcept;
  void use_this_process_loop();
  void throw_if_down(steady_time now) const;
  /// The loop and connection a question goes through (this process's own, in a child that
  /// has not acquired yet).
  event_loop* route_for_asking(std::shared_ptr<connection>& conn) const;
  std::string message(const std::string& why) const;
  bool head_needs_ask() noexcept;
  void post_ask(event_loop& loop);
  void undo_enqueue(waiter_key key) noexcept;
  void remove(waiter_queue::iterator at, bool& wake_head) noexcept;
  void post_wake_head(event_loop& loop) noexcept;

  // The event thread's side.
  void ask() noexcept;
  void on_answer(waiter_key asked, bool taken, std::chrono::microseconds wait,
                 std::chrono::microseconds ahead) noexcept;
  void on_timer(std::uint64_t generation) noexcept;
  void grant(waiter_key asked) noexcept;
  answered_node answer(waiter_queue::iterator at, const std::exception_ptr& failure) noexcept;
  void fail_all(const std::string& why) noexcept;

  const address where_;
  const std::string key_;
  const double per_second_;
  const double burst_;
  const redis_options options_;
  const std::string per_second_arg_;  // as the script reads them
  const std::string burst_arg_;

  /// Guards everything below. Never held while calling the connection or a waiter.
  mutable std::mutex mutex_;
  waiter_queue queue_;
  std::map<node_ref, waiter_queue::iterator> nodes_;  // where each queued node is
  std::uint64_t serial_ = 0;
  head_state head_ = head_state::idle;
  waiter_key asked_{0, 0};              // whom the request in flight, or the timer, is for
  bool reserved_ = false;               // asked_'s tokens are taken: the timer grants it
  std::uint64_t timer_generation_ = 0;  // a timer of another generation does nothing
  /// The loop and connection of this process: null in a child until its first acquire.
  event_loop* loop_ = nullptr;
  std::shared_ptr<connection> connection_;
  std::uint64_t epoch_;  // event_loop::epoch() of loop_ and the waiters
};

}  // namespace xcs::detail::redis
