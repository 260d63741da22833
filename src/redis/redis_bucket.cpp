// SPDX-License-Identifier: MIT
// The Redis-backed token bucket: the script, the local queue, and its head's conversation with
// the server on the event thread.
#include "redis_bucket.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <utility>

#include "bucket_script.hpp"
#include "event_loop.hpp"
#include "script.hpp"
#include "xcs/error.hpp"

namespace xcs::detail::redis {
namespace {

/// The longest a head's tokens are taken ahead of time. Longer waits ask again when they are
/// this far off, so that a withdrawn waiter wastes at most a second's tokens.
constexpr std::chrono::microseconds kMaxReserve{1'000'000};
/// The shortest wait before asking again (rounding must not make the head ask in a loop).
constexpr std::chrono::microseconds kMinAskAgain{1'000};

}  // namespace

redis_bucket::redis_bucket(address where, std::string key, double per_second, double burst,
                           redis_options options)
    : where_(std::move(where)),
      key_(std::move(key)),
      per_second_(per_second),
      burst_(burst),
      options_(options),
      per_second_arg_(fmt::format("{}", per_second)),
      burst_arg_(fmt::format("{}", burst)),
      epoch_(event_loop::epoch()) {
  loop_ = &event_loop::get();
  connection_ = loop_->connection_to(where_);
  (void)bucket_script();
}

// Timers and replies still due hold the bucket weakly and find it gone.
redis_bucket::~redis_bucket() = default;

std::string redis_bucket::message(const std::string& why) const {
  return fmt::format("xcs::redis_rate_limiter (key '{}'): {}", key_, why);
}

void redis_bucket::forget_parent_waiters() noexcept {
  if (epoch_ == event_loop::epoch()) return;
  // A child after fork(): the waiters' threads, the event thread and its timers were the
  // parent's. The connection is replaced by the next acquire (use_this_process_loop).
  queue_.clear();
  nodes_.clear();
  head_ = head_state::idle;
  reserved_ = false;
  ++timer_generation_;
  loop_ = nullptr;
  epoch_ = event_loop::epoch();
}

void redis_bucket::use_this_process_loop() {
  forget_parent_waiters();
  if (loop_) return;
  event_loop& loop = event_loop::get();
  // The parent's connection is never destroyed here: its loop (leaked) still holds it.
  connection_ = loop.connection_to(where_);
  loop_ = &loop;
}

void redis_bucket::throw_if_down(steady_time now) const {
  std::string why;
  if (connection_->down(now, why)) throw error(message(why));
}

bool redis_bucket::head_needs_ask() noexcept {
  if (head_ != head_state::idle || queue_.empty()) return false;
  head_ = head_state::asking;
  return true;
}

void redis_bucket::post_ask(event_loop& loop) {
  loop.post([weak = weak_from_this()] {
    if (auto b = weak.lock()) b->ask();
  });
}

void redis_bucket::undo_enqueue(waiter_key key) noexcept {
  // The ask could not be posted (no memory): the waiter leaves, and the head is idle, so that
  // the next arrival posts again.
  std::lock_guard lock(mutex_);
  auto at = queue_.find(key);
  if (at != queue_.end()) {
    if (at->second.waiter) nodes_.erase(node_ref{at->second.waiter, at->second.node});
    queue_.erase(at);
  }
  head_ = head_state::idle;
}

void redis_bucket::remove(waiter_queue::iterator at, bool& wake_head) noexcept {
  const bool was_asked = head_ != head_state::idle && at->first == asked_;
  if (at->second.waiter) nodes_.erase(node_ref{at->second.waiter, at->second.node});
  queue_.erase(at);
  // A head that waits for a timer hands over at once; one whose request is in flight hands
  // over when the reply comes (its tokens, if taken, are not given back).
  if (was_asked && head_ == head_state::waiting) wake_head = true;
}

void redis_bucket::post_wake_head(event_loop& loop) noexcept {
  try {
    loop.post([weak = weak_from_this()] {
      auto b = weak.lock();
      if (!b) return;
      {
        std::lock_guard lock(b->mutex_);
        if (b->head_ != head_state::waiting || b->queue_.count(b->asked_)) return;
        ++b->timer_generation_;  // the head's timer does nothing now
        b->head_ = head_state::asking;
      }
      b->ask();
    });
  } catch (...) {
    // No memory: the head's timer hands over when it runs.
  }
}

event_loop* redis_bucket::route_for_asking(std::shared_ptr<connection>& conn) const {
  std::lock_guard lock(mutex_);
  // A child that has not acquired yet still has the parent's loop: it asks through its own.
  if (!loop_ || epoch_ != event_loop::epoch()) {
    event_loop* loop = &event_loop::get();
    conn = loop->connection_to(where_);
    return loop;
  }
  conn = connection_;
  return loop_;
}

double redis_bucket::available() const {
  struct answer {
    std::mutex mutex;
    std::condition_variable cv;
    bool done = false;
    std::string failure;
    double tokens = 0;
  };
  auto a = std::make_shared<answer>();
  const steady_time now = std::chrono::steady_clock::now();
  std::shared_ptr<connection> conn;
  event_loop* loop = route_for_asking(conn);
  std::string why;
  if (conn->down(now, why)) throw error(message(why));
  const steady_time deadline = now + options_.command_timeout;
  loop->post([a, conn, key = key_, rate = per_second_arg_, burst = burst_arg_, where = where_,
              deadline, options = options_] {
    auto answered = [a](std::string failure, double tokens) {
      std::lock_guard lock(a->mutex);
      a->done = true;
      a->failure = std::move(failure);
      a->tokens = tokens;
      a->cv.notify_one();
    };
    try {
      bucket_script().run(*conn, key, {rate, burst, "0", "0"}, deadline, options.command_timeout,
                          options.connect_timeout,
                          [answered, where](const redisReply* r, const std::string& failure) {
                            bucket_answer parsed;
                            if (!r) {
                              answered(failure, 0);
                            } else if (!parse_answer(r, parsed)) {
                              answered(unexpected_reply(where, r), 0);
                            } else {
                              answered(std::string(), parsed.tokens);
                            }
                          });
    } catch (const std::bad_alloc&) {
      answered("out of memory", 0);
    }
  });
  std::unique_lock lock(a->mutex);
  // The event thread answers by the deadline (or when connecting fails); the margin is for a
  // loaded machine.
  const steady_time give_up = deadline + options_.connect_timeout + std::chrono::seconds(1);
  if (!a->cv.wait_until(lock, give_up, [&] { return a->done; })) {
    throw error(message(fmt::format("Redis at {}: no answer from the event thread", where_.url)));
  }
  if (!a->failure.empty()) throw error(message(a->failure));
  return std::clamp(a->tokens, 0.0, burst_);
}

std::size_t redis_bucket::waiting() const noexcept {
  std::lock_guard lock(mutex_);
  return epoch_ == event_loop::epoch() ? queue_.size() : 0;
}

bool redis_bucket::acquire_or_queue(token_waiter& w, std::uint32_t node, double tokens,
                                    std::uint64_t order) {
  const steady_time now = std::chrono::steady_clock::now();
  waiter_key key{};
  event_loop* loop = nullptr;
  {
    std::lock_guard lock(mutex_);
    forget_parent_waiters();
    if (tokens <= 0 && queue_.empty()) return true;
    use_this_process_loop();
    throw_if_down(now);
    loop = loop_;
    key = waiter_key{order, ++serial_};
    auto at = queue_.emplace(key, queued{&w, node, nullptr, tokens, steady_time::max()}).first;
    try {
      if (!nodes_.emplace(node_ref{&w, node}, at).second) {
        queue_.erase(at);  // already queued: its one answer is still to come
        return false;
      }
    } catch (...) {
      queue_.erase(at);
      throw;
    }
    if (!head_needs_ask()) return false;
  }
  try {
    post_ask(*loop);
  } catch (...) {
    undo_enqueue(key);
    throw;
  }
  return false;
}

bool redis_bucket::withdraw(token_waiter& w, std::uint32_t node) noexcept {
  bool wake_head = false;
  event_loop* loop = nullptr;
  {
    std::lock_guard lock(mutex_);
    forget_parent_waiters();
    auto found = nodes_.find(node_ref{&w, node});
    // Not there: never queued, or its answer was decided under this lock.
    if (found == nodes_.end()) return false;
    remove(found->second, wake_head);
    loop = loop_;
  }
  if (wake_head) post_wake_head(*loop);
  return true;
}

bool redis_bucket::acquire_blocking(double tokens, steady_time deadline, std::stop_token stop) {
  blocked_call me;
  waiter_key key{};
  bool ask_now = false;
  event_loop* loop = nullptr;
  {
    std::lock_guard lock(mutex_);
    forget_parent_waiters();
    if (tokens <= 0 && queue_.empty()) return true;
    use_this_process_loop();
    const steady_time now = std::chrono::steady_clock::now();
    throw_if_down(now);
    if (stop.stop_requested() || now >= deadline) return false;
    key = waiter_key{next_order(), ++serial_};
    queue_.emplace(key, queued{nullptr, 0, &me, tokens, deadline});
    ask_now = head_needs_ask();
    loop = loop_;
  }
  if (ask_now) {
    try {
      post_ask(*loop);
    } catch (...) {
      undo_enqueue(key);
      throw;
    }
  }
  // Registered without the lock held: a stop already requested runs the callback right here.
  // Its destructor waits for a callback running on another thread, so `me` outlives the notify.
  std::stop_callback on_stop(stop, [this, &me] {
    {
      std::lock_guard lock(mutex_);
      me.stopped = true;
    }
    me.cv.notify_one();
  });
  bool granted = false;
  bool wake_head = false;
  std::exception_ptr failed;
  {
    std::unique_lock lock(mutex_);
    const auto answered = [&] { return me.granted || me.failed || me.stopped; };
    if (deadline == steady_time::max()) {
      me.cv.wait(lock, answered);
    } else {
      me.cv.wait_until(lock, deadline, answered);
    }
    granted = me.granted;
    failed = me.failed;
    if (!granted && !failed) {
      auto at = queue_.find(key);
      if (at != queue_.end()) remove(at, wake_head);
    }
  }
  // The lock is released before on_stop's destructor, which may wait for a callback that takes it.
  if (wake_head) post_wake_head(*loop);
  if (failed) std::rethrow_exception(failed);
  return granted;
}

// ---- the event thread ---------------------------------------------------------------------

void redis_bucket::ask() noexcept {
  const steady_time now = std::chrono::steady_clock::now();
  std::shared_ptr<connection> conn;
  waiter_key asked{};
  double tokens = 0;
  std::chrono::microseconds ahead = kMaxReserve;
  {
    std::lock_guard lock(mutex_);
    if (queue_.empty() || !loop_) {
      head_ = head_state::idle;
      return;
    }
    const auto& [key, head] = *queue_.begin();
    asked_ = asked = key;
    reserved_ = false;
    head_ = head_state::asking;
    tokens = head.tokens;
    // A blocked call takes its tokens ahead only as far as it will wait for them.
    if (head.deadline != steady_time::max()) {
      ahead = std::clamp(std::chrono::duration_cast<std::chrono::microseconds>(head.deadline - now),
                         std::chrono::microseconds(0), kMaxReserve);
    }
    conn = connection_;
  }
  try {
    bucket_script().run(
        *conn, key_,
        {per_second_arg_, burst_arg_, fmt::format("{}", tokens), std::to_string(ahead.count())},
        now + options_.command_timeout, options_.command_timeout, options_.connect_timeout,
        [weak = weak_from_this(), asked, ahead](const redisReply* r, const std::string& failure) {
          auto b = weak.lock();
          if (!b) return;
          if (!r) {
            b->fail_all(failure);
            return;
          }
          bucket_answer answer;
          if (!parse_answer(r, answer)) {
            std::string why;
            try {
              why = unexpected_reply(b->where_, r);
            } catch (...) {
              why = "an unexpected reply to the rate-limit script";
            }
            b->fail_all(why);
            return;
          }
          b->on_answer(asked, answer.taken, answer.wait, ahead);
        });
  } catch (const std::bad_alloc&) {
    fail_all(fmt::format("Redis at {}: cannot ask: out of memory", where_.url));
  }
}

void redis_bucket::on_answer(waiter_key asked, bool taken, std::chrono::microseconds wait,
                             std::chrono::microseconds ahead) noexcept {
  if (taken && wait.count() == 0) {
    grant(asked);
    return;
  }
  // Taken ahead: granted when due. Not taken: ask again once it is `ahead` away.
  const steady_time at =
      std::chrono::steady_clock::now() +
      (taken ? wait : std::max(wait - ahead, std::chrono::microseconds(kMinAskAgain)));
  std::uint64_t generation;
  {
    std::lock_guard lock(mutex_);
    if (!queue_.count(asked)) {
      // Withdrawn while asking (its tokens, if taken, are spent): the next waiter asks now.
      head_ = head_state::asking;
      generation = 0;
    } else {
      head_ = head_state::waiting;
      reserved_ = taken;
      generation = ++timer_generation_;
    }
  }
  if (generation == 0) {
    ask();
    return;
  }
  try {
    loop_->add_timer(at, [weak = weak_from_this(), generation] {
      if (auto b = weak.lock()) b->on_timer(generation);
    });
  } catch (const std::bad_alloc&) {
    fail_all(fmt::format("Redis at {}: cannot wait: out of memory", where_.url));
  }
}

void redis_bucket::on_timer(std::uint64_t generation) noexcept {
  bool reserved = false;
  waiter_key asked{};
  {
    std::lock_guard lock(mutex_);
    if (generation != timer_generation_ || head_ != head_state::waiting) return;
    reserved = reserved_;
    asked = asked_;
    head_ = head_state::asking;
  }
  if (reserved) {
    grant(asked);
  } else {
    ask();
  }
}

redis_bucket::answered_node redis_bucket::answer(waiter_queue::iterator at,
                                                 const std::exception_ptr& failure) noexcept {
  answered_node out;
  if (blocked_call* call = at->second.call) {
    if (failure) {
      call->failed = failure;
    } else {
      call->granted = true;
    }
    // Under the lock: once the caller sees its answer it returns and its blocked_call is gone.
    call->cv.notify_one();
  } else {
    out = answered_node{at->second.waiter, at->second.node};
    nodes_.erase(node_ref{out.waiter, out.node});
  }
  queue_.erase(at);
  return out;
}

void redis_bucket::grant(waiter_key asked) noexcept {
  answered_node granted;
  bool next = false;
  {
    std::lock_guard lock(mutex_);
    auto at = queue_.find(asked);
    if (at != queue_.end()) granted = answer(at, nullptr);  // else withdrawn: the tokens are spent
    reserved_ = false;
    next = !queue_.empty();
    head_ = next ? head_state::asking : head_state::idle;
  }
  if (granted.waiter) granted.waiter->tokens_granted(granted.node);
  if (next) ask();
}

void redis_bucket::fail_all(const std::string& why) noexcept {
  std::exception_ptr e;
  try {
    e = std::make_exception_ptr(error(message(why)));
  } catch (...) {
    e = std::current_exception();  // std::bad_alloc
  }
  // One at a time, the lock released for each node's tokens_failed.
  for (;;) {
    answered_node failed;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) {
        head_ = head_state::idle;
        reserved_ = false;
        ++timer_generation_;
        return;
      }
      failed = answer(queue_.begin(), e);
    }
    if (failed.waiter) failed.waiter->tokens_failed(failed.node, e);
  }
}

}  // namespace xcs::detail::redis
