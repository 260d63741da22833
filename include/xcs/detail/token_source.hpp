// SPDX-License-Identifier: MIT
// Where a rate limit's tokens come from: the interface the run engine and the direct call
// draw on. In process, a token_bucket; across processes, a bucket kept in Redis (xcs::redis).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <stop_token>
#include <string_view>

namespace xcs::detail {

using steady_time = std::chrono::steady_clock::time_point;

/// A run that queued a node for tokens. Exactly one of the two is called per queued (w, node)
/// that is not withdrawn, never with a source's lock held and never from inside the source's
/// acquire_or_queue(); neither may destroy the source.
class token_waiter {
 public:
  /// The node's tokens are now taken for it: make it ready again.
  virtual void tokens_granted(std::uint32_t node) noexcept = 0;
  /// No tokens will come: the source failed (a shared bucket's server cannot be reached). The
  /// node fails with `e` (an xcs::error that says why) as if its op had thrown it.
  virtual void tokens_failed(std::uint32_t node, std::exception_ptr e) noexcept = 0;

 protected:
  ~token_waiter() = default;
};

/// A rate limit's tokens: a bucket of `burst()` tokens refilled at `per_second()`. Two kinds of
/// callers wait for tokens: nodes of a run, queued without holding a thread and granted later
/// (acquire_or_queue), and direct calls, which block their own thread (acquire_blocking). A
/// source is shared (xcs::rate_limiter is a handle to one) and thread-safe.
class token_source {
 public:
  virtual ~token_source() = default;

  virtual double per_second() const noexcept = 0;
  virtual double burst() const noexcept = 0;
  /// Tokens in the bucket now. A remote source asks its server: throws xcs::error when it
  /// cannot be reached.
  virtual double available() const = 0;
  /// Waiters queued now in this process, nodes and blocked direct calls (for tests and stats).
  virtual std::size_t waiting() const noexcept = 0;

  /// Takes `tokens` (0 <= tokens <= burst; checked by the caller) at once if it can: returns
  /// true. Otherwise queues (w, node) keyed by `order` (lower goes first, as far as the source
  /// can order its waiters) and returns false: w.tokens_granted(node) or w.tokens_failed(node,
  /// e) follows, never from inside this call. A (w, node) is queued once at a time. Throws
  /// without queuing: std::bad_alloc, std::system_error, or xcs::error when a remote source
  /// failed at once.
  virtual bool acquire_or_queue(token_waiter& w, std::uint32_t node, double tokens,
                                std::uint64_t order) = 0;

  /// Removes a queued (w, node) not yet granted: true if removed (nothing will be called for
  /// it). False if it was not queued, or its end was already decided (then tokens_granted or
  /// tokens_failed has been or is being called; the caller copes).
  virtual bool withdraw(token_waiter& w, std::uint32_t node) noexcept = 0;

  /// Direct calls: blocks this thread until `tokens` are taken for it (true), or until
  /// `deadline` passes or `stop` is requested (false, nothing taken). Throws std::bad_alloc,
  /// std::system_error, or xcs::error when a remote source fails, without taking anything.
  virtual bool acquire_blocking(double tokens, steady_time deadline, std::stop_token stop) = 0;

  /// A process-wide increasing sequence for order keys, in the form of a node's key: `n << 32`
  /// for n = 1, 2, ... A call of a plan may take one and add its node ids (below 2^32) for its
  /// nodes' keys, so that direct calls and plans' nodes sort by when they began. After 2^32
  /// orders n wraps to 0: a waiter queued across the wrap may be overtaken once (only the order
  /// suffers; nothing is lost).
  static std::uint64_t next_order() noexcept;
};

/// Throws xcs::error, its message starting with `who`, when `per_second` is not above 0 or
/// not finite, or `burst` is below 1 or not finite: the rules every source's maker checks.
void check_rate(std::string_view who, double per_second, double burst);

}  // namespace xcs::detail
