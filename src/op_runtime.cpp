// SPDX-License-Identifier: MIT
// An op's runtime state, and the concurrency permits of its direct calls.
#include "xcs/detail/op_runtime.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <random>
#include <stop_token>
#include <thread>

#include "monitor.hpp"
#include "timer.hpp"
#include "xcs/detail/cache_key.hpp"
#include "xcs/detail/call_limits.hpp"
#include "xcs/detail/concurrency_limit.hpp"
#include "xcs/detail/token_source.hpp"
#include "xcs/error.hpp"
#include "xcs/op.hpp"

namespace xcs::detail {

namespace {

/// An op's options, as explain() lists them after its result type.
std::string describe_options(bool hinted_blocking, std::uint32_t max_concurrency,
                             const op_policy* p) {
  std::string out;
  auto add = [&out](const std::string& what) {
    if (!out.empty()) out += ", ";
    out += what;
  };
  if (hinted_blocking) add("blocking");
  if (max_concurrency) add(fmt::format("max_concurrency {}", max_concurrency));
  if (!p) return out;
  if (p->cache) {
    add("cache " + p->cache->describe());
    if (!p->cache_version.empty()) add("version " + p->cache_version);
  }
  if (p->timeout_ns) add("timeout " + describe_ns(static_cast<std::int64_t>(p->timeout_ns)));
  if (p->max_attempts > 1) {
    add(fmt::format("retry {} attempts from {}{}", p->max_attempts,
                    describe_ns(static_cast<std::int64_t>(p->first_backoff_ns)),
                    p->retry_if ? " if retry_if" : ""));
  }
  if (p->bucket) {
    add(fmt::format("rate_limit {}/s burst {}{}", p->bucket->per_second(), p->bucket->burst(),
                    p->weight ? " weighted" : ""));
  }
  return out;
}

}  // namespace

op_runtime::op_runtime(std::string op_name, bool hinted_blocking, std::uint32_t max_concurrency,
                       bool is_async, std::unique_ptr<const op_policy> op_policy)
    : op_identity(std::move(op_name), hinted_blocking, is_async, max_concurrency,
                  describe_options(hinted_blocking, max_concurrency, op_policy.get())),
      limit(max_concurrency ? std::make_unique<concurrency_limit>(max_concurrency) : nullptr),
      policy(std::move(op_policy)) {}

std::unique_ptr<const op_policy> op_options::policy(const std::string& name) const {
  if (has_timeout && timeout_ns <= 0) {
    throw error(fmt::format("xcs: op '{}': xcs::timeout must be above zero (got {})", name,
                            describe_ns(timeout_ns)));
  }
  if (max_attempts == 0) {
    throw error(fmt::format("xcs: op '{}': xcs::retry needs at least 1 attempt (got 0)", name));
  }
  if (first_backoff_ns < 0) {
    throw error(fmt::format("xcs: op '{}': xcs::retry's backoff must not be negative (got {})",
                            name, describe_ns(first_backoff_ns)));
  }
  if (!has_timeout && max_attempts <= 1 && !limiter && !cache) return nullptr;
  auto p = std::make_unique<op_policy>();
  p->timeout_ns = has_timeout ? static_cast<std::uint64_t>(timeout_ns) : 0;
  p->max_attempts = max_attempts;
  p->first_backoff_ns = static_cast<std::uint64_t>(first_backoff_ns);
  p->retry_if = retry_if;
  if (limiter) p->bucket = limiter->shared_bucket();
  p->weight = weight.get();
  if (cache) {
    p->cache = cache;
    p->cache_version = cache_version;
    // Each part length-prefixed: the name "ab" with version "c" is not "a" with "bc".
    append_text(p->cache_prefix, name);
    append_text(p->cache_prefix, cache_version);
  }
  return p;
}

bool op_policy::retries(const std::exception_ptr& e, std::uint32_t attempts) const noexcept {
  if (attempts >= max_attempts || !e) return false;
  try {
    std::rethrow_exception(e);
  } catch (const cancelled&) {
    return false;
  } catch (const deadline_exceeded&) {
    return false;
  } catch (...) {
  }
  if (!retry_if) return true;
  try {
    return retry_if(e);
  } catch (...) {
    return false;  // a predicate that throws retries nothing
  }
}

std::uint64_t op_policy::backoff_ns(std::uint32_t attempts) const noexcept {
  // Full jitter (AWS's "Exponential Backoff And Jitter"): uniform over [0, the exponential
  // step], which spreads the retries of many callers that failed at once.
  const std::uint64_t cap = first_backoff_ns * 30;
  std::uint64_t step = first_backoff_ns;
  for (std::uint32_t i = 1; i < attempts && step < cap; ++i) step *= 2;
  step = std::min(step, cap);
  if (step == 0) return 0;
  thread_local std::minstd_rand rng(
      static_cast<std::uint32_t>(std::chrono::steady_clock::now().time_since_epoch().count() ^
                                 reinterpret_cast<std::uintptr_t>(&rng)));
  return std::uniform_int_distribution<std::uint64_t>(0, step)(rng);
}

op_runtime::~op_runtime() { wait_for_monitor_pass(); }

void op_runtime::fold(std::uint64_t ns) noexcept {
  // A moving average over about four runs: an op's duration drifts (a warm cache, a slower
  // server), and one outlier should not decide alone whether waking a worker pays.
  auto sample = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(ns, 1, 0xffffffffu));
  std::uint32_t old = est_ns.load(std::memory_order_relaxed);
  std::uint32_t next =
      old == 0 ? sample : static_cast<std::uint32_t>((std::uint64_t{old} * 3 + sample) / 4);
  est_ns.store(std::max<std::uint32_t>(next, 1), std::memory_order_relaxed);
}

direct_permit::direct_permit(op_runtime& p) : limit_(p.limit.get()) {
  if (limit_) limit_->acquire_blocking();
}

direct_permit::~direct_permit() {
  if (limit_) limit_->release();
}

void check_tokens(const op_runtime& p, double tokens) {
  const double burst = p.policy->bucket->burst();
  if (!(tokens >= 0)) {
    throw error(
        fmt::format("xcs: op '{}': its rate-limit weight must be a number of tokens >= 0 "
                    "(got {})",
                    p.name, tokens));
  }
  if (tokens > burst) {
    throw error(
        fmt::format("xcs: op '{}': an instance asks for {} tokens, more than the rate "
                    "limiter's burst ({}), so it could never start",
                    p.name, tokens, burst));
  }
}

direct_instance::direct_instance(op_runtime& p, const call_limits* limits, double tokens)
    : permit_((
          [&] {
            if (!p.policy || !p.policy->bucket) return;
            check_tokens(p, tokens);
            const steady_time deadline = limits ? limits->deadline : steady_time::max();
            std::stop_token stop = limits ? limits->stop : std::stop_token();
            if (!p.policy->bucket->acquire_blocking(tokens, deadline, stop)) {
              if (limits) limits->check_op(p.name);
              // Neither passed: the bucket's own limit (cannot happen; say so rather than hang).
              throw error(fmt::format("xcs: op '{}': no rate-limit tokens", p.name));
            }
          }(),
          p)) {}

void direct_timeout::arm() {
  // The instance's token: its own source, stopped at the timeout or by the call's stop.
  source_ = std::stop_source();
  token_ = source_.get_token();
  std::stop_token outer = current_stop_token();
  if (outer.stop_possible()) outer_.emplace(outer, relay{&source_});
  scope_.emplace(&token_);
  due_ = std::chrono::steady_clock::now() + std::chrono::nanoseconds(p_.policy->timeout_ns);
  timer_ = add_timer(due_, &expire, this, 0);
}

void direct_timeout::disarm() noexcept {
  cancel_timer(timer_);  // waits for expire() if it runs now
}

void direct_timeout::expire(void* self, std::uint64_t) noexcept {
  static_cast<direct_timeout*>(self)->source_.request_stop();
}

void direct_timeout::check_due() const {
  if (std::chrono::steady_clock::now() < due_) return;
  throw timeout_error(fmt::format("xcs: op '{}' timed out after {}", p_.name,
                                  describe_ns(static_cast<std::int64_t>(p_.policy->timeout_ns))));
}

bool direct_backoff(const op_runtime& p, std::uint32_t attempts, const call_limits* limits) {
  const auto wait = std::chrono::nanoseconds(p.policy->backoff_ns(attempts));
  const auto until = std::chrono::steady_clock::now() + wait;
  if (limits && until >= limits->deadline) return false;  // no attempt after the deadline
  if (!limits || !limits->stop.stop_possible()) {
    std::this_thread::sleep_until(until);
    return true;
  }
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  return !cv.wait_until(lock, limits->stop, until, [] { return false; });
}

std::uint32_t concurrency_bound(const op_runtime& p) noexcept {
  return p.limit ? p.limit->limit() : 0;
}

std::uint32_t concurrency_peak(const op_runtime& p) noexcept {
  return p.limit ? p.limit->peak() : 0;
}

}  // namespace xcs::detail
