// SPDX-License-Identifier: MIT
// A batch through its op's per-batch options: queued waits for tokens and a permit, attempts
// with a timeout, retries after a backoff on the timer thread (see batch_flight.hpp).
#include "xcs/detail/batch_flight.hpp"

#include <fmt/format.h>

#include <chrono>
#include <new>
#include <thread>
#include <utility>

#include "blocking_lane.hpp"
#include "timer.hpp"
#include "xcs/detail/op_runtime.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {
namespace {

constexpr std::uint64_t kNoTimer = ~std::uint64_t{0};

}  // namespace

/// One attempt: its completion's slot and result, the permit it holds until its function is
/// done, and its stop (requested at its timeout and by the call's stop). With a timeout, the
/// flight and the timer race to end it (`state`): the flight by the attempt's settle, the
/// timer by failing the attempt and going on without it. The loser's side frees it: a late
/// completion finds it timed out, drops its result and permit, and deletes it.
struct batch_flight::attempt final : async_sink {
  enum : std::uint8_t { running = 0, finished = 1, timed_out = 2 };
  batch_flight* flight = nullptr;
  const batch_result_kind* kind = nullptr;
  concurrency_limit* permit = nullptr;  // held until the function is done (null: none)
  std::atomic<std::uint8_t> state{running};
  std::uint64_t timer = 0;
  async_slot slot;
  std::unique_ptr<std::byte[]> storage;
  std::stop_source stop{std::nostopstate};
  std::stop_token token;
  struct relay {
    std::stop_source* s;
    void operator()() const noexcept { s->request_stop(); }
  };
  std::optional<std::stop_callback<relay>> outer;  // the call's stop, relayed to `stop`
  /// The call's limits, current while the function runs: a function that times out may run on
  /// after its flight has ended.
  call_limits limits;
  batch_attempt_keep keep;

  void drop_result() noexcept {
    if (slot.has_value) kind->destroy(slot.out);
  }
  void settle(async_slot& s) noexcept override {
    if (timer) {
      std::uint8_t was = running;
      if (!state.compare_exchange_strong(was, finished, std::memory_order_acq_rel)) {
        // Timed out: the flight went on without it. `keep` holds the op (and its permit).
        drop_result();
        if (permit) permit->release();
        delete this;
        return;
      }
      cancel_timer(timer);  // waits for a timer that is firing: it loses and lets go of us
    }
    // The permit goes back first: once the calls have their outcomes, the op may be gone.
    if (permit) permit->release();
    batch_flight* f = flight;
    if (s.error()) {
      const std::exception_ptr e = s.error();
      drop_result();
      f->attempt_failed(e);
    } else {
      f->finish(s.out, nullptr);
    }
    delete this;
  }
};

batch_flight::batch_flight(op_runtime& per_batch, const batch_result_kind& kind,
                           const call_limits* limits, batch_counts* counts,
                           std::uint32_t deduplicated) noexcept
    : op_(per_batch), kind_(kind), counts_(counts), deduplicated_(deduplicated) {
  if (limits) limits_ = *limits;
}

batch_flight::~batch_flight() = default;

void batch_flight::begin() noexcept {
  if (limits_.bounded()) {
    // Watched for the flight's whole life: an interruption does something only while it waits.
    try {
      if (limits_.deadline != steady_time::max()) {
        deadline_timer_ = add_timer(limits_.deadline, &deadline_due, this, 0);
      }
      if (limits_.stop.stop_possible()) on_stop_.emplace(limits_.stop, stop_relay{this});
    } catch (...) {
      finish(nullptr, std::current_exception());  // no timer thread, or no memory
      return;
    }
  }
  take_tokens();
}

void batch_flight::run_step(step s) noexcept {
  switch (s) {
    case step::tokens:
      take_tokens();
      break;
    case step::permit:
      take_permit();
      break;
    case step::attempt:
      start_attempt();
      break;
  }
}

void batch_flight::resume(step next) noexcept {
  // The granting thread (a timer, a releasing op's) is not the batch's: the lane goes on.
  try {
    run_blocking([this, next] { run_step(next); });
  } catch (...) {
    run_step(next);  // no lane thread: from here
  }
}

void batch_flight::begin_wait(wait_kind what) noexcept {
  what_ = what;
  wait_.store(waiting, std::memory_order_release);
}

bool batch_flight::end_wait() noexcept {
  std::uint8_t w = waiting;
  return wait_.compare_exchange_strong(w, idle, std::memory_order_acq_rel);
}

std::exception_ptr batch_flight::limits_error() const noexcept {
  try {
    limits_.check_op(op_.name);
    throw_cancelled(op_.name);  // interrupted, so one of the two holds; never reached
  } catch (...) {
    return std::current_exception();
  }
}

void batch_flight::take_tokens() noexcept {
  try {
    limits_.check_op(op_.name);  // no wait, nor attempt, once the call is over
  } catch (...) {
    finish(nullptr, last_error_ ? last_error_ : std::current_exception());
    return;
  }
  token_source* bucket = op_.policy ? op_.policy->bucket.get() : nullptr;
  if (!bucket) {
    take_permit();
    return;
  }
  bool taken = false;
  std::exception_ptr failed;
  begin_wait(wait_kind::tokens);
  try {
    const double n = tokens();
    check_tokens(op_, n);
    if (order_ == 0) order_ = token_source::next_order();
    taken = bucket->acquire_or_queue(*this, 0, n, order_);
  } catch (...) {
    failed = std::current_exception();  // nothing queued
  }
  if (!taken && !failed) return;  // queued: tokens_granted or tokens_failed follows
  if (!end_wait()) {
    finish(nullptr, limits_error());  // interrupted meanwhile (its withdrawal found nothing)
  } else if (failed) {
    finish(nullptr, failed);
  } else {
    take_permit();
  }
}

void batch_flight::tokens_granted(std::uint32_t) noexcept {
  if (end_wait()) {
    resume(step::permit);
  } else {
    finish(nullptr, limits_error());  // the tokens are spent: they cannot go back
  }
}

void batch_flight::tokens_failed(std::uint32_t, std::exception_ptr e) noexcept {
  finish(nullptr, end_wait() ? e : limits_error());
}

void batch_flight::take_permit() noexcept {
  concurrency_limit* limit = op_.limit.get();
  if (!limit) {
    start_attempt();
    return;
  }
  begin_wait(wait_kind::permit);
  bool taken = false;
  try {
    taken = limit->acquire_or_park(*this, 0);
  } catch (...) {
    const std::exception_ptr e = std::current_exception();  // no memory to park
    finish(nullptr, end_wait() ? e : limits_error());
    return;
  }
  if (!taken) return;  // parked: permit_granted follows
  if (end_wait()) {
    start_attempt();
  } else {
    limit->release();
    finish(nullptr, limits_error());
  }
}

void batch_flight::permit_granted(std::uint32_t) noexcept {
  if (end_wait()) {
    resume(step::attempt);
  } else {
    op_.limit->release();
    finish(nullptr, limits_error());
  }
}

void batch_flight::start_attempt() noexcept {
  ++attempts_;
  attempt* at = new (std::nothrow) attempt;
  try {
    if (!at) throw std::bad_alloc();
    at->storage.reset(new std::byte[kind_.size + kind_.align]);
  } catch (...) {
    delete at;
    if (op_.limit) op_.limit->release();
    finish(nullptr, std::current_exception());
    return;
  }
  auto p = reinterpret_cast<std::uintptr_t>(at->storage.get());
  p = (p + kind_.align - 1) / kind_.align * kind_.align;
  at->flight = this;
  at->kind = &kind_;
  at->permit = op_.limit.get();
  at->slot.prepare(*at, &op_, reinterpret_cast<void*>(p), 0, 0);
  const std::uint64_t timeout_ns = op_.policy ? op_.policy->timeout_ns : 0;
  try {
    if (timeout_ns || limits_.stop.stop_possible()) {
      // The attempt's own stop: its timeout's, joined with the call's.
      at->stop = std::stop_source();
      at->token = at->stop.get_token();
      if (limits_.stop.stop_possible()) at->outer.emplace(limits_.stop, attempt::relay{&at->stop});
    }
    if (timeout_ns) {
      const auto due = std::chrono::steady_clock::now() + std::chrono::nanoseconds(timeout_ns);
      at->timer = add_timer(due, &attempt_timed_out, at, 0);
    }
  } catch (...) {
    // No memory or no timer thread: this attempt has no timeout (as a run's op would not).
    at->timer = 0;
  }
  {
    std::optional<limits_scope> inherit;
    if (limits_.bounded()) {
      at->limits = limits_;
      inherit.emplace(&at->limits);
    }
    instance_stop_scope instance(&at->token);
    start(at->slot, at->keep);
  }
  if (at->slot.arrive()) at->settle(at->slot);
}

void batch_flight::attempt_timed_out(void* p, std::uint64_t) noexcept {
  auto* at = static_cast<attempt*>(p);
  // Read before the claim: once the timer wins, the attempt belongs to its late completion.
  batch_flight* f = at->flight;
  std::stop_source stop = at->stop;
  std::uint8_t was = attempt::running;
  if (!at->state.compare_exchange_strong(was, attempt::timed_out, std::memory_order_acq_rel)) {
    return;  // the attempt finished first
  }
  ++f->timeouts_;
  stop.request_stop();  // the function's stop callback may complete it (late) from here
  std::exception_ptr e;
  try {
    throw timeout_error(
        fmt::format("xcs: op '{}' timed out after {}", f->op_.name,
                    describe_ns(static_cast<std::int64_t>(f->op_.policy->timeout_ns))));
  } catch (...) {
    e = std::current_exception();
  }
  f->attempt_failed(std::move(e));
}

void batch_flight::attempt_failed(std::exception_ptr e) noexcept {
  last_error_ = e;
  const op_policy* pol = op_.policy.get();
  if (!pol || !pol->retries(e, attempts_) || limits_.stop.stop_requested()) {
    finish(nullptr, e);
    return;
  }
  const auto due =
      std::chrono::steady_clock::now() + std::chrono::nanoseconds(pol->backoff_ns(attempts_));
  if (due >= limits_.deadline) {  // no attempt after the deadline
    finish(nullptr, e);
    return;
  }
  backoff_timer_.store(0, std::memory_order_relaxed);
  begin_wait(wait_kind::backoff);
  std::uint64_t id = kNoTimer;
  try {
    id = add_timer(due, &backoff_due, this, 0);
  } catch (...) {
    // No timer: the failure stands.
  }
  if (id != kNoTimer) {
    // Release: the timer's callback and an interruption that won the wait read it. The last
    // touch of the flight from here.
    backoff_timer_.store(id, std::memory_order_release);
    return;
  }
  if (end_wait()) {
    finish(nullptr, e);
  } else {
    backoff_timer_.store(kNoTimer, std::memory_order_release);  // the interruption ends it
  }
}

void batch_flight::backoff_due(void* self, std::uint64_t) noexcept {
  auto* f = static_cast<batch_flight*>(self);
  // The arming thread's last touch of the flight is the id's store: it must come first, or
  // the flight could go on, end and be freed under it.
  while (f->backoff_timer_.load(std::memory_order_acquire) == 0) std::this_thread::yield();
  // An interruption that won has cancelled this timer, or waits for it: touch nothing.
  if (f->end_wait()) f->resume(step::tokens);
}

void batch_flight::deadline_due(void* self, std::uint64_t) noexcept {
  static_cast<batch_flight*>(self)->interrupt();
}

void batch_flight::interrupt() noexcept {
  std::uint8_t w = waiting;
  if (!wait_.compare_exchange_strong(w, interrupted, std::memory_order_acq_rel)) return;
  switch (what_) {
    case wait_kind::tokens:
      // Withdrawn: nothing else will come. Otherwise its grant is on its way and ends it.
      if (op_.policy->bucket->withdraw(*this, 0)) finish(nullptr, limits_error());
      return;
    case wait_kind::permit:
      return;  // a parked wait cannot be withdrawn: its grant ends the flight
    case wait_kind::backoff: {
      std::uint64_t id;
      // The thread that armed the timer stores its id right after arming it.
      while ((id = backoff_timer_.load(std::memory_order_acquire)) == 0) std::this_thread::yield();
      // The timer, if it fires, loses the wait and touches nothing; cancel_timer waits for it.
      if (id != kNoTimer) cancel_timer(id);
      finish(nullptr, last_error_);
      return;
    }
  }
}

void batch_flight::finish(void* results, const std::exception_ptr& e) noexcept {
  // No interruption after this: each waits for one that is running on another thread, which
  // finds the flight not waiting and returns.
  if (deadline_timer_) cancel_timer(std::exchange(deadline_timer_, 0));
  on_stop_.reset();
  if (counts_) {
    counts_->deduplicated = deduplicated_;
    counts_->resends = static_cast<std::uint16_t>(attempts_ > 1 ? attempts_ - 1 : 0);
    counts_->timeouts = static_cast<std::uint16_t>(timeouts_);
  }
  if (e) {
    fail(e);
  } else {
    deliver(results);
  }
  delete this;  // virtual: the op's flight type
}

}  // namespace xcs::detail
