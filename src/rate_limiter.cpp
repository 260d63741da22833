// SPDX-License-Identifier: MIT
// Rate limits: the token bucket's refill, its queue of waiters in key order, and the timer that
// grants the head of the queue when its tokens are there.
#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstddef>
#include <utility>

#include "timer.hpp"
#include "xcs/detail/token_bucket.hpp"
#include "xcs/error.hpp"
#include "xcs/rate_limit.hpp"

namespace xcs::detail {
namespace {

/// Nodes the timer thread grants per run. More ready nodes are left to a timer armed for at
/// once, so that a run stays short however many wait (requests of 0 tokens are all ready).
constexpr std::size_t kGrantsPerRun = 32;
/// The furthest ahead a timer is armed: a head due later is looked at again then (a very low
/// rate would otherwise overflow the clock's arithmetic).
constexpr double kMaxArmSeconds = 3600;
/// While no timer could be armed (add_timer threw where the bucket cannot throw), a blocked
/// direct call tries to arm one again this often.
constexpr auto kArmRetry = std::chrono::milliseconds(1);

/// Order keys of calls that are not nodes. Relaxed: only uniqueness and increase matter.
std::atomic<std::uint64_t> g_orders{0};

/// `have` tokens cover `need`, up to rounding: a refill computed to 0.9999999 of a token is a
/// token, rather than a reason to wait for one more timer. What is taken on this allowance is
/// owed (the bucket goes that little below 0), so no tokens are made up over many grants.
constexpr double kRoundingAllowance = 1e-6;
bool covers(double have, double need) noexcept {
  return have >= need - kRoundingAllowance * std::max(1.0, need);
}

}  // namespace

/// A direct call blocked in acquire_blocking(), on its own stack.
struct token_bucket::blocked_call {
  std::condition_variable cv;
  bool granted = false;  // set under the bucket's lock, which the grant holds while it notifies
  bool stopped = false;  // set under the bucket's lock by the stop callback
};

/// Nodes granted under the bucket's lock, told after it is released.
struct token_bucket::grant_list {
  std::array<std::pair<token_waiter*, std::uint32_t>, kGrantsPerRun> at;
  std::size_t size = 0;
};

token_bucket::token_bucket(double per_second, double burst)
    : per_second_(per_second),
      burst_(burst),
      tokens_(burst),
      refilled_at_(std::chrono::steady_clock::now()),
      epoch_(timer_epoch()) {}

token_bucket::~token_bucket() {
  std::uint64_t armed;
  {
    std::lock_guard lock(mutex_);
    closing_ = true;
    armed = std::exchange(armed_id_, 0);
  }
  // Outside the lock: a timer that has started waits for it, finds closing_ and returns, and
  // cancel_timer waits for that. Timers replaced earlier were cancelled by the calls that
  // replaced them, before those returned.
  if (armed) cancel_timer(armed);
}

std::uint64_t token_source::next_order() noexcept {
  return (g_orders.fetch_add(1, std::memory_order_relaxed) + 1) << 32;
}

double token_bucket::available() const noexcept {
  const steady_time now = std::chrono::steady_clock::now();
  std::lock_guard lock(mutex_);
  double tokens = tokens_;
  if (now > refilled_at_) {
    tokens += std::chrono::duration<double>(now - refilled_at_).count() * per_second_;
  }
  return std::clamp(tokens, 0.0, burst_);  // without the rounding debt (see covers)
}

std::size_t token_bucket::waiting() const noexcept {
  std::lock_guard lock(mutex_);
  return epoch_ == timer_epoch() ? queue_.size() : 0;
}

void token_bucket::forget_parent_waiters() noexcept {
  // A child after fork(): the waiters' threads and the armed timer were the parent's.
  queue_.clear();
  nodes_.clear();
  armed_id_ = 0;
  epoch_ = timer_epoch();
}

void token_bucket::refill(steady_time now) noexcept {
  // A thread that read the clock before another refilled adds nothing.
  if (now <= refilled_at_) return;
  tokens_ = std::min(
      burst_, tokens_ + std::chrono::duration<double>(now - refilled_at_).count() * per_second_);
  refilled_at_ = now;
}

steady_time token_bucket::head_ready_at(steady_time now) const noexcept {
  const double need = queue_.begin()->second.tokens;
  if (covers(tokens_, need)) return now;
  const double seconds = std::min((need - tokens_) / per_second_, kMaxArmSeconds);
  // Rounded up: at that time the tokens are there, not a nanosecond's worth short.
  return now + std::chrono::ceil<std::chrono::steady_clock::duration>(
                   std::chrono::duration<double>(seconds));
}

void token_bucket::arrange_timer(steady_time now, std::uint64_t& stale) {
  if (queue_.empty()) {
    stale = std::exchange(armed_id_, 0);
    return;
  }
  const steady_time at = head_ready_at(now);
  // A timer that runs no later than needed stays: if it runs early (the head was replaced by
  // one that needs more tokens), it arms the next one itself. Fewer cancels.
  if (armed_id_ != 0 && armed_at_ <= at) return;
  const std::uint64_t generation = armed_generation_ + 1;
  // Under the lock: the timer thread takes this lock only in a callback, holding none of its own.
  const std::uint64_t id = add_timer(at, &token_bucket::on_timer, this, generation);
  stale = std::exchange(armed_id_, id);
  armed_at_ = at;
  armed_generation_ = generation;
}

void token_bucket::arrange_timer_or_retry_later(steady_time now, std::uint64_t& stale) noexcept {
  try {
    arrange_timer(now, stale);
  } catch (...) {
    // No timer to be had now. A timer still armed runs and tries again; without one, the next
    // call of the bucket tries again, and blocked direct calls try every kArmRetry.
  }
}

void token_bucket::grant_ready(grant_list& grants) noexcept {
  while (!queue_.empty()) {
    auto head = queue_.begin();
    const queued& q = head->second;
    if (!covers(tokens_, q.tokens)) return;
    if (q.waiter && grants.size == grants.at.size()) return;  // the next timer run goes on
    tokens_ -= q.tokens;
    if (q.call) {
      q.call->granted = true;
      // Under the lock: once the caller sees `granted` it returns and its blocked_call is gone.
      q.call->cv.notify_one();
    } else {
      grants.at[grants.size++] = {q.waiter, q.node};
      nodes_.erase(node_ref{q.waiter, q.node});
    }
    queue_.erase(head);
  }
}

void token_bucket::remove(waiter_queue::iterator at, steady_time now,
                          std::uint64_t& stale) noexcept {
  const bool head = at == queue_.begin();
  if (at->second.waiter) nodes_.erase(node_ref{at->second.waiter, at->second.node});
  queue_.erase(at);
  if (queue_.empty()) {
    stale = std::exchange(armed_id_, 0);  // nobody waits: no timer
  } else if (head) {
    // The new head may need fewer tokens, so sooner (possibly at once).
    refill(now);
    arrange_timer_or_retry_later(now, stale);
  }
}

void token_bucket::on_timer(void* context, std::uint64_t generation) noexcept {
  auto& b = *static_cast<token_bucket*>(context);
  grant_list grants;
  {
    std::lock_guard lock(b.mutex_);
    if (b.closing_ || b.armed_id_ == 0 || generation != b.armed_generation_) return;
    b.armed_id_ = 0;  // this one, which runs now
    const steady_time now = std::chrono::steady_clock::now();
    b.refill(now);
    b.grant_ready(grants);
    std::uint64_t stale = 0;  // stays 0: nothing is armed
    b.arrange_timer_or_retry_later(now, stale);
  }
  // The bucket is not touched after its lock is released: a caller that destroys it after its
  // last withdraw cancels only the timer armed above, and does not wait for this run.
  for (std::size_t i = 0; i < grants.size; ++i) {
    grants.at[i].first->tokens_granted(grants.at[i].second);
  }
}

bool token_bucket::acquire_or_queue(token_waiter& w, std::uint32_t node, double tokens,
                                    std::uint64_t order) {
  const steady_time now = std::chrono::steady_clock::now();
  std::uint64_t stale = 0;
  {
    std::lock_guard lock(mutex_);
    if (epoch_ != timer_epoch()) forget_parent_waiters();
    refill(now);
    if (queue_.empty() && covers(tokens_, tokens)) {
      tokens_ -= tokens;
      return true;
    }
    // Queued even when its tokens are there (someone is ahead, and its grant is due at once):
    // grants come only from the timer thread, never from inside this call.
    auto at = queue_.emplace(waiter_key{order, ++serial_}, queued{&w, node, nullptr, tokens}).first;
    bool indexed = false;
    try {
      indexed = nodes_.emplace(node_ref{&w, node}, at).second;
      if (!indexed) {
        queue_.erase(at);  // already queued: its one grant is still to come
        return false;
      }
      arrange_timer(now, stale);
    } catch (...) {
      if (indexed) nodes_.erase(node_ref{&w, node});
      queue_.erase(at);
      throw;
    }
  }
  // After the lock: a replaced timer that has started waits for the lock (then does nothing),
  // and cancel_timer waits for it.
  if (stale) cancel_timer(stale);
  return false;
}

bool token_bucket::withdraw(token_waiter& w, std::uint32_t node) noexcept {
  std::uint64_t stale = 0;
  {
    std::lock_guard lock(mutex_);
    if (epoch_ != timer_epoch()) forget_parent_waiters();
    auto found = nodes_.find(node_ref{&w, node});
    // Not there: never queued, or granted (the grant was decided under this lock).
    if (found == nodes_.end()) return false;
    remove(found->second, std::chrono::steady_clock::now(), stale);
  }
  if (stale) cancel_timer(stale);
  return true;
}

bool token_bucket::acquire_blocking(double tokens, steady_time deadline, std::stop_token stop) {
  blocked_call me;
  waiter_queue::iterator at;
  std::uint64_t stale = 0;
  {
    std::lock_guard lock(mutex_);
    if (epoch_ != timer_epoch()) forget_parent_waiters();
    const steady_time now = std::chrono::steady_clock::now();
    refill(now);
    if (queue_.empty() && covers(tokens_, tokens)) {
      tokens_ -= tokens;
      return true;
    }
    if (stop.stop_requested() || now >= deadline) return false;
    at = queue_.emplace(waiter_key{next_order(), ++serial_}, queued{nullptr, 0, &me, tokens}).first;
    try {
      arrange_timer(now, stale);
    } catch (...) {
      queue_.erase(at);
      throw;
    }
  }
  if (stale) cancel_timer(stale);
  stale = 0;
  // Registered without the lock held: a stop already requested runs the callback right here.
  // Its destructor waits for a callback running on another thread, so `me` outlives the notify.
  std::stop_callback on_stop(stop, [this, &me] {
    {
      std::lock_guard lock(mutex_);
      me.stopped = true;
    }
    me.cv.notify_one();
  });
  bool granted;
  {
    std::unique_lock lock(mutex_);
    for (;;) {
      if (me.granted || me.stopped) break;
      const steady_time now = std::chrono::steady_clock::now();
      if (now >= deadline) break;
      steady_time wake_at = deadline;
      if (armed_id_ == 0) {
        // No timer could be armed: try again now, and soon again if that fails too.
        refill(now);
        arrange_timer_or_retry_later(now, stale);
        if (armed_id_ == 0) wake_at = std::min(deadline, now + kArmRetry);
      }
      me.cv.wait_until(lock, wake_at);
    }
    granted = me.granted;
    if (!granted) remove(at, std::chrono::steady_clock::now(), stale);
  }
  // The lock is released before on_stop's destructor, which may wait for a callback that takes it.
  if (stale) cancel_timer(stale);
  return granted;
}

void check_rate(std::string_view who, double per_second, double burst) {
  if (!std::isfinite(per_second)) {
    throw error(fmt::format("{}: the rate must be a finite number of tokens per second (got {})",
                            who, per_second));
  }
  if (!(per_second > 0)) {
    throw error(fmt::format("{}: the rate must be above 0 per second (got {})", who, per_second));
  }
  if (!std::isfinite(burst)) {
    throw error(
        fmt::format("{}: the burst must be a finite number of tokens (got {})", who, burst));
  }
  if (!(burst >= 1)) {
    throw error(fmt::format("{}: the burst must be at least 1 token (got {})", who, burst));
  }
}

}  // namespace xcs::detail

namespace xcs {

rate_limiter::rate_limiter(double per_second, double burst) {
  detail::check_rate("xcs::rate_limiter", per_second, burst);
  bucket_ = std::make_shared<detail::token_bucket>(per_second, burst);
}

rate_limiter::rate_limiter(std::shared_ptr<detail::token_source> source)
    : bucket_(std::move(source)) {
  if (!bucket_) throw error("xcs::rate_limiter: no source of tokens (a null pointer)");
}

}  // namespace xcs
