// SPDX-License-Identifier: MIT
// An op's runtime state: what xcs learns about one op while it runs, beside its identity.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <type_traits>

#include "xcs/detail/cache_store.hpp"
#include "xcs/detail/call_limits.hpp"
#include "xcs/detail/graph.hpp"

namespace xcs::detail {

class concurrency_limit;
class token_source;
class cache_store;
class batch_sender;

/// What an op's options say about its instances beyond running them: a result cache, a
/// timeout, retries and a rate limit (xcs::cache, xcs::timeout, xcs::retry, xcs::retry_if,
/// xcs::rate_limit). The run engine and the direct call apply it; an op without these options
/// has none (a null policy).
struct op_policy {
  std::uint64_t timeout_ns = 0;  ///< 0: none
  std::uint32_t max_attempts = 1;
  std::uint64_t first_backoff_ns = 0;
  /// Which failures are retried (empty: all but xcs::cancelled and xcs::deadline_exceeded).
  std::function<bool(const std::exception_ptr&)> retry_if;
  std::shared_ptr<token_source> bucket;  ///< null: no rate limit
  /// The tokens one instance takes, from its inputs (set by the op's kernel; null: 1).
  const void* weight = nullptr;
  std::shared_ptr<cache_store> cache;  ///< null: results are not cached
  std::string cache_version;           ///< xcs::cache_version's, or empty
  /// What every key of the op starts with: its name and version, each length-prefixed.
  std::string cache_prefix;

  /// Whether a failed attempt `e` after `attempts` runs is tried again (time aside).
  bool retries(const std::exception_ptr& e, std::uint32_t attempts) const noexcept;
  /// The backoff before attempt `attempts + 1`: full jitter over first * 2^(attempts-1),
  /// capped at 30 * first.
  std::uint64_t backoff_ns(std::uint32_t attempts) const noexcept;
  /// What the cache store is told when an instance joins a key: `codec`, and how long an
  /// owner may take (its timeout times its attempts; 0 without a timeout).
  cache_query query(const result_codec* codec) const noexcept {
    const std::uint64_t most = timeout_ns * max_attempts;
    return {codec,
            static_cast<std::int64_t>(std::min<std::uint64_t>(most, std::uint64_t{INT64_MAX} / 2))};
  }
};

/// One `xcs::op`'s runtime state, shared by every copy of the op, every plan and every
/// thread. Its base is the op's immutable identity, which is all the IR names; the run engine,
/// the monitor and the blocking lane reach the state from it (`of`) and update it, and
/// `stats()` reads it. Fields are atomics read and written relaxed: each is a hint for a
/// scheduling decision, never used to synchronize.
struct op_runtime : op_identity {
  op_runtime(std::string op_name, bool hinted_blocking, std::uint32_t max_concurrency,
             bool is_async = false, std::unique_ptr<const op_policy> op_policy = nullptr);
  ~op_runtime() override;

  /// The runtime state of the op whose identity is `id` (every op identity is made as the
  /// base of an op_runtime: xcs::op, xcs::async_op and nested jitted calls make them).
  static op_runtime& of(const op_identity& id) noexcept {
    return const_cast<op_runtime&>(static_cast<const op_runtime&>(id));
  }

  /// Set by xcs::max_concurrency: at most this many instances run at once, process-wide.
  /// Null when unbounded.
  const std::unique_ptr<concurrency_limit> limit;
  /// Its timeout, retries and rate limit; null when it has none.
  const std::unique_ptr<const op_policy> policy;
  /// An xcs::batch_op's sending side (set by its state, which owns it), else null. A batch
  /// op's nodes hold no limit and no policy of their own: its options apply per batch.
  batch_sender* batch = nullptr;
  /// The monitor saw an instance sit in the kernel without using CPU (set), or the blocking
  /// lane saw one that computed or returned quickly (cleared). Read on every dispatch.
  std::atomic<bool> observed_blocking{false};
  /// Learned duration of one instance in ns (a moving average; 0 = not yet measured).
  /// Written after runs, so on a line of its own, away from what every dispatch reads.
  alignas(64) std::atomic<std::uint32_t> est_ns{0};

  bool blocking() const noexcept {
    return blocking_hint || observed_blocking.load(std::memory_order_relaxed);
  }
  /// Folds one measured duration (start to end) into est_ns; ignored for an async op.
  void learn(std::uint64_t ns) noexcept {
    if (!async) fold(ns);
  }
  /// Folds what one start of an async op cost (its function's run) into est_ns.
  void learn_start(std::uint64_t ns) noexcept { fold(ns); }

 private:
  void fold(std::uint64_t ns) noexcept;
};

/// Takes a permit of `p`'s concurrency limit for a direct call, blocking until one is free;
/// gives it back when destroyed. No-op for an unbounded op.
class direct_permit {
 public:
  explicit direct_permit(op_runtime& p);
  ~direct_permit();
  direct_permit(const direct_permit&) = delete;
  direct_permit& operator=(const direct_permit&) = delete;

 private:
  concurrency_limit* limit_;
};

struct call_limits;

/// One instance of a direct (plain) call of `p`: takes `tokens` of its rate limit (blocking
/// this thread, within `limits`' deadline and stop), then a permit of its concurrency limit;
/// gives the permit back when destroyed. Throws xcs::error for a weight that is negative, not
/// a number, or above the limiter's burst; xcs::deadline_exceeded or xcs::cancelled if the
/// wait for tokens ends that way.
class direct_instance {
 public:
  direct_instance(op_runtime& p, const call_limits* limits, double tokens);
  ~direct_instance() = default;
  direct_instance(const direct_instance&) = delete;
  direct_instance& operator=(const direct_instance&) = delete;

 private:
  direct_permit permit_;
};

/// The timeout of one instance of a direct call of `p` (xcs::timeout), which has no thread to
/// leave the op on: at the timeout, stop is requested on the instance's token (the op's
/// trailing std::stop_token, joined with the call's own stop), and an instance that returns
/// after its timeout fails with xcs::timeout_error, its result discarded, as in a jitted call.
/// Does nothing for an op without a timeout.
class direct_timeout {
 public:
  explicit direct_timeout(const op_runtime& p) : p_(p) {
    if (p.policy && p.policy->timeout_ns) arm();
  }
  ~direct_timeout() {
    if (timer_) disarm();
  }
  direct_timeout(const direct_timeout&) = delete;
  direct_timeout& operator=(const direct_timeout&) = delete;
  /// After the op returned: throws xcs::timeout_error if its timeout had passed.
  void check() const {
    if (timer_) check_due();
  }
  /// Calls `f` (the instance) and returns what it returns, checked: past the timeout, whether
  /// `f` returned or threw, the outcome is xcs::timeout_error instead.
  template <class F>
  std::invoke_result_t<F&> call(F&& f) const {
    using R = std::invoke_result_t<F&>;
    auto attempt = [&]() -> R {
      try {
        return f();
      } catch (...) {
        check();
        throw;
      }
    };
    if constexpr (std::is_void_v<R>) {
      attempt();
      check();
    } else {
      R r = attempt();
      check();
      if constexpr (std::is_reference_v<R>) {
        return static_cast<R>(r);
      } else {
        return r;
      }
    }
  }

 private:
  void arm();
  void disarm() noexcept;
  void check_due() const;
  static void expire(void* self, std::uint64_t) noexcept;
  struct relay {
    std::stop_source* s;
    void operator()() const noexcept { s->request_stop(); }
  };

  const op_runtime& p_;
  std::uint64_t timer_ = 0;
  std::chrono::steady_clock::time_point due_;
  std::stop_source source_{std::nostopstate};
  std::stop_token token_;
  std::optional<std::stop_callback<relay>> outer_;  // the call's stop, relayed
  std::optional<instance_stop_scope> scope_;
};

/// A direct call's turn at `p`'s result cache, for the key `key`: a hit (value() is the kept
/// result), or, after waiting (blocking this thread) while another instance computes the key,
/// its result, or the ownership of the key: then the call runs the op and gives the result to
/// fill(); an owner destroyed without filling (the op threw) hands the key on. Throws
/// xcs::deadline_exceeded or xcs::cancelled if `limits` end the wait.
class direct_flight {
 public:
  direct_flight(const op_runtime& p, std::string key, const result_codec* codec,
                const call_limits* limits);
  ~direct_flight();
  direct_flight(const direct_flight&) = delete;
  direct_flight& operator=(const direct_flight&) = delete;

  /// The kept result (a hit), or null: this call owns the key.
  const void* value() const noexcept { return value_.get(); }
  /// The owner's result: kept, and handed to the waiters.
  void fill(std::shared_ptr<const void> result) noexcept;

 private:
  void wait(const op_runtime& p, const result_codec* codec, const call_limits* limits);

  cache_store& store_;
  std::string key_;
  std::shared_ptr<const void> value_;
  bool owner_ = false;
};

/// A direct call of a cached op `p`: the key is `p`'s prefix and what `encode` appends; a hit
/// returns a copy of the kept result without calling `call` (no tokens, no permit, no retry).
template <class R, class Encode, class Call>
R cached_call(const op_runtime& p, const call_limits* limits, const result_codec* codec,
              const Encode& encode, const Call& call) {
  std::string key = p.policy->cache_prefix;
  encode(key);
  direct_flight flight(p, std::move(key), codec, limits);
  if (const void* kept = flight.value()) return R(*static_cast<const R*>(kept));
  R r = call();
  std::shared_ptr<const void> copy;
  try {
    copy = std::make_shared<const R>(r);
  } catch (...) {
    return r;  // no memory, or the copy threw: not kept (the flight hands the key on)
  }
  flight.fill(std::move(copy));
  return r;
}

/// Checks the tokens an instance of `p` asks for; throws xcs::error naming the op and value.
void check_tokens(const op_runtime& p, double tokens);

/// A direct call's wait before attempt `attempts + 1` of `p`: false (no wait) if it would end
/// past `limits`' deadline or stop is requested meanwhile.
bool direct_backoff(const op_runtime& p, std::uint32_t attempts, const call_limits* limits);

/// Runs `once()` (one instance of a direct call of `p`), again while `p`'s retry policy says so.
template <class Once>
auto direct_attempts(const op_runtime& p, const call_limits* limits, Once& once)
    -> decltype(once()) {
  if (!p.policy || p.policy->max_attempts <= 1) return once();
  for (std::uint32_t attempts = 1;; ++attempts) {
    try {
      return once();
    } catch (...) {
      if (!p.policy->retries(std::current_exception(), attempts) ||
          !direct_backoff(p, attempts, limits)) {
        throw;
      }
    }
  }
}

/// The bound of `p`'s limit (0 if none) and the most instances that ran at once.
std::uint32_t concurrency_bound(const op_runtime& p) noexcept;
std::uint32_t concurrency_peak(const op_runtime& p) noexcept;

}  // namespace xcs::detail
