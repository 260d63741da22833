// SPDX-License-Identifier: MIT
// One batch of a batch op through the options it applies per batch: its wait for rate-limit
// tokens and a concurrency permit, its attempts with their timeout, and its retries.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <optional>
#include <stop_token>

#include "xcs/detail/async.hpp"
#include "xcs/detail/batch.hpp"
#include "xcs/detail/call_limits.hpp"
#include "xcs/detail/concurrency_limit.hpp"
#include "xcs/detail/token_source.hpp"

namespace xcs::detail {

struct op_runtime;

/// How an attempt's result (a `std::vector<Out>`) is stored and destroyed, without its type.
struct batch_result_kind {
  std::size_t size;
  std::size_t align;
  void (*destroy)(void*) noexcept;
};
template <class R>
inline const batch_result_kind batch_result_kind_of{
    sizeof(R), alignof(R), +[](void* p) noexcept { static_cast<R*>(p)->~R(); }};

/// What an attempt keeps alive for as long as its function may still run or complete: the op
/// (its function and its permit) and the batch's inputs. Set only for an op with a timeout,
/// the one case where an attempt outlives its batch.
struct batch_attempt_keep {
  std::shared_ptr<const void> op;
  std::shared_ptr<const void> inputs;
};

/// One batch on its way through its op's per-batch options (`per_batch`): it takes its tokens
/// (queued, holding no thread, in the order batches began), then a permit (parked likewise),
/// then starts an attempt; a failed or timed-out attempt is tried again after its backoff on
/// the timer thread, while the policy, the call's deadline and its stop allow. The end, a
/// result or the last exception, goes to every call at once, and the flight deletes itself.
///
/// Each step is taken by exactly one thread: the sending one, then whichever callback (a grant,
/// a timer, an attempt's settle) continues it. A sync function after a queued wait runs on the
/// blocking lane, never on the thread that granted. While the flight waits (`wait_` is
/// `waiting`), the call's deadline or stop may interrupt it: the grant and the interruption
/// race on `wait_` (acquire-release), and the loser of an interruption that could not withdraw
/// the wait ends the flight when its grant comes.
class batch_flight : token_waiter, permit_waiter {
 public:
  batch_flight(const batch_flight&) = delete;
  batch_flight& operator=(const batch_flight&) = delete;

  /// Sends the batch from this thread; the flight may be gone when this returns.
  void begin() noexcept;

 protected:
  /// `per_batch`: the op's options; `limits`: the sending call's (copied), or null; `counts`:
  /// where the batch's numbers go before its calls get their outcomes, or null.
  batch_flight(op_runtime& per_batch, const batch_result_kind& kind, const call_limits* limits,
               batch_counts* counts, std::uint32_t deduplicated) noexcept;
  virtual ~batch_flight();

  /// The rate-limit tokens the batch takes (its weight). May throw: the batch fails with it.
  virtual double tokens() const = 0;
  /// Calls the function for one attempt: `s`'s completion party arrives exactly once, now or
  /// later (a sync function: with its outcome, before this returns). `s.out` is the result's
  /// storage. Sets `keep` when the op has a timeout.
  virtual void start(async_slot& s, batch_attempt_keep& keep) noexcept = 0;
  /// Every call gets its result from `results` (a `std::vector<Out>`, destroyed by the callee).
  virtual void deliver(void* results) noexcept = 0;
  /// Every call fails with `e`.
  virtual void fail(const std::exception_ptr& e) noexcept = 0;

 private:
  struct attempt;
  enum class step : std::uint8_t { tokens, permit, attempt };
  enum class wait_kind : std::uint8_t { tokens, permit, backoff };
  /// `wait_`: the flight waits (a callback or an interruption continues it), or not.
  enum : std::uint8_t { idle = 0, waiting = 1, interrupted = 2 };
  struct stop_relay {
    batch_flight* f;
    void operator()() const noexcept { f->interrupt(); }
  };

  void take_tokens() noexcept;
  void take_permit() noexcept;
  void start_attempt() noexcept;
  void attempt_failed(std::exception_ptr e) noexcept;
  /// Goes on with `next` on the blocking lane (here if it has no thread).
  void resume(step next) noexcept;
  void run_step(step s) noexcept;
  /// Marks the flight waiting for `what`.
  void begin_wait(wait_kind what) noexcept;
  /// The waiter ends the wait: true if it won it, false if an interruption did.
  bool end_wait() noexcept;
  /// The call's deadline passed or its stop was requested.
  void interrupt() noexcept;
  static void deadline_due(void* self, std::uint64_t) noexcept;
  static void backoff_due(void* self, std::uint64_t) noexcept;
  static void attempt_timed_out(void* at, std::uint64_t) noexcept;
  /// The call's own error (xcs::cancelled or xcs::deadline_exceeded).
  std::exception_ptr limits_error() const noexcept;
  /// The end: the counts, then every call's outcome (`results`, or `e`), then delete this.
  void finish(void* results, const std::exception_ptr& e) noexcept;

  // token_waiter, permit_waiter: the grants of a queued wait.
  void tokens_granted(std::uint32_t) noexcept override;
  void tokens_failed(std::uint32_t, std::exception_ptr e) noexcept override;
  void permit_granted(std::uint32_t) noexcept override;

  op_runtime& op_;
  const batch_result_kind& kind_;
  call_limits limits_;  // the sending call's deadline and stop (none if unbounded)
  batch_counts* counts_;
  std::uint32_t deduplicated_;
  std::uint32_t attempts_ = 0;  // attempts started
  std::uint32_t timeouts_ = 0;  // attempts that timed out
  std::uint64_t order_ = 0;     // its place in the token queue (taken at the first wait)
  std::exception_ptr last_error_;
  /// idle / waiting / interrupted; what_ is written before `waiting` is stored (release).
  std::atomic<std::uint8_t> wait_{idle};
  wait_kind what_ = wait_kind::tokens;
  /// The backoff timer's id once armed (0 until then, ~0 if none could be armed): an
  /// interruption that wins the backoff wait cancels it.
  std::atomic<std::uint64_t> backoff_timer_{0};
  std::uint64_t deadline_timer_ = 0;
  std::optional<std::stop_callback<stop_relay>> on_stop_;
};

}  // namespace xcs::detail
