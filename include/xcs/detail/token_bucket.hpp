// SPDX-License-Identifier: MIT
// A token bucket shared by every plan and thread that calls a rate-limited op.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <map>
#include <mutex>
#include <stop_token>

#include "xcs/detail/token_source.hpp"
#include "xcs/detail/token_waiters.hpp"

namespace xcs::detail {

/// A token bucket that refills continuously at `per_second` up to `burst` tokens. It starts
/// full: the first `burst` tokens are there at once. Two kinds of callers wait for tokens in
/// one queue, lowest order key first: nodes of a plan, which are queued without holding a
/// thread and granted later, and direct calls, which block their own thread. Thread-safe.
///
/// Granting: whoever is at the head of the queue gets its tokens as soon as they are there,
/// and nobody behind it goes first (a small request does not overtake a large one). A timer
/// (add_timer) is armed for when the head's tokens will be there while anyone waits, and the
/// timer thread takes them and grants. A child after fork() drops the waiters queued in the
/// parent (their threads do not exist there); a bucket whose lock a parent's thread held at
/// the fork cannot be used in the child.
///
/// The bucket must outlive every call and every queued waiter (withdraw them first); a pending
/// timer is cancelled by the destructor.
class token_bucket final : public token_source {
 public:
  /// per_second > 0 and burst >= 1, both finite (checked by rate_limiter).
  token_bucket(double per_second, double burst);
  ~token_bucket() override;
  token_bucket(const token_bucket&) = delete;
  token_bucket& operator=(const token_bucket&) = delete;

  double per_second() const noexcept override { return per_second_; }
  double burst() const noexcept override { return burst_; }
  /// Tokens in the bucket now (refilled to now). Queued waiters' tokens are not in it yet.
  double available() const noexcept override;
  /// Waiters queued now, nodes and blocked direct calls (for tests and stats).
  std::size_t waiting() const noexcept override;

  /// Takes `tokens` (0 <= tokens <= burst; checked by the caller) at once if nobody is queued
  /// and the bucket has them: returns true. Otherwise queues (w, node) keyed by `order` (lower
  /// goes first; equal keys in the order queued) and returns false: `w.tokens_granted(node)`
  /// follows once the tokens are taken for it, never from inside this call. A (w, node) is queued
  /// once at a time: queuing it again while it waits changes nothing (one grant comes). Throws
  /// std::bad_alloc or std::system_error (from add_timer) without queuing.
  ///
  ///   std::uint64_t call = token_bucket::next_order();  // once per call of a plan
  ///   if (!bucket.acquire_or_queue(run, node, 1.0, call | node)) return;  // parked
  bool acquire_or_queue(token_waiter& w, std::uint32_t node, double tokens,
                        std::uint64_t order) override;

  /// Removes a queued (w, node) not yet granted: true if removed (no grant will come). False if
  /// it was not queued, or its grant was already decided (then tokens_granted has been or is
  /// being called; the caller copes).
  bool withdraw(token_waiter& w, std::uint32_t node) noexcept override;

  /// Direct calls: blocks this thread until `tokens` are taken for it (true), or until
  /// `deadline` passes or `stop` is requested (false, nothing taken). It waits in the same
  /// queue as the nodes, keyed by a fresh next_order(). Throws std::bad_alloc or
  /// std::system_error (from add_timer) without taking anything.
  bool acquire_blocking(double tokens, steady_time deadline, std::stop_token stop) override;

 private:
  struct blocked_call;
  /// One waiter: a node (`waiter` set) or a blocked direct call (`call` set).
  struct queued {
    token_waiter* waiter;
    std::uint32_t node;
    blocked_call* call;
    double tokens;
  };
  using waiter_queue = std::map<waiter_key, queued>;
  struct grant_list;

  static void on_timer(void* context, std::uint64_t generation) noexcept;
  void forget_parent_waiters() noexcept;
  void refill(steady_time now) noexcept;
  steady_time head_ready_at(steady_time now) const noexcept;
  void arrange_timer(steady_time now, std::uint64_t& stale);
  void arrange_timer_or_retry_later(steady_time now, std::uint64_t& stale) noexcept;
  void grant_ready(grant_list& grants) noexcept;
  void remove(waiter_queue::iterator at, steady_time now, std::uint64_t& stale) noexcept;

  const double per_second_;
  const double burst_;
  /// Guards everything below. add_timer is called with it held (the timer thread takes it only
  /// in a callback, holding none of its own); cancel_timer only without it, since it may wait
  /// for a callback that takes it. Grants are called without it.
  mutable std::mutex mutex_;
  double tokens_;
  steady_time refilled_at_;
  waiter_queue queue_;
  /// Where each queued node is, for withdraw().
  std::map<node_ref, waiter_queue::iterator> nodes_;
  std::uint64_t serial_ = 0;
  /// The timer armed for the head of the queue: its id (0 if none), its time, and the
  /// generation it carries as its argument; a timer whose generation is not the current one
  /// was replaced and does nothing when it runs.
  std::uint64_t armed_id_ = 0;
  steady_time armed_at_;
  std::uint64_t armed_generation_ = 0;
  /// timer_epoch() when the waiters were queued: another one means a child after fork().
  std::uint64_t epoch_;
  bool closing_ = false;  // the destructor runs: a running timer does nothing
};

}  // namespace xcs::detail
