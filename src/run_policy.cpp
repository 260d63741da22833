// SPDX-License-Identifier: MIT
// The run engine's policies, what an op's options add to a node's life (see run.hpp): an
// attempt run with the call's limits and its instance's stop token around it, the result
// cache, waits for rate-limit tokens, retries after a backoff, and attempts that time out.
// Each waits holding no thread: a queued node, a timer.
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <new>
#include <optional>
#include <string>
#include <utility>

#include "clock.hpp"
#include "run.hpp"
#include "timer.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {
namespace {

/// A node a wait gives back is worth a wake whatever it costs: nobody else will run it.
constexpr std::uint64_t kWakeNsForPolicies = 4'000;

}  // namespace

// ---- an attempt with what its policy or a bounded call sets around it ---------------------

run::attempt_end run::execute(node_id n) noexcept {
  const node_layout& ni = info(n);
  node_state& s = nodes_[n];
  std::uint8_t o = s.out ? constructed : ran;
  // An op with a timeout runs each attempt into storage of its own: the attempt may be left
  // behind while the node goes on (a retry, its successors).
  attempt* at = ni.op->policy && ni.op->policy->timeout_ns ? begin_attempt(n, false) : nullptr;
  void* out = at ? attempt_out(at) : s.out;
  std::exception_ptr error;
  std::uint64_t took = 0;
  std::uint64_t cpu = 0;
  {
    // A jitted call the op makes inherits the call's limits; the op's token is its instance's.
    std::optional<limits_scope> inherit;
    if (bounded_) inherit.emplace(&inherited_);
    std::stop_token token;
    std::optional<instance_stop_scope> instance;
    if (ni.kernel->wants_stop) {
      token = s.stop.get_token();
      instance.emplace(&token);
    }
    invoke_timed(ni, out, error, took, cpu);
  }
  if (at) {
    if (!claim(at)) {
      discard(at, !error && s.out);  // timed out: the node went on without it
      return attempt_end::lost;
    }
    if (!error && s.out) {
      try {
        ni.kernel->relocate(s.out, attempt_out(at));
      } catch (...) {
        error = std::current_exception();  // the result's move threw: that is the outcome
      }
    }
    free_attempt(at);
  }
  s.ticks = took;
  s.cpu_ns = cpu;
  if (!error) {  // the common end, without the call
    s.outcome.store(o, std::memory_order_release);
    return attempt_end::done;
  }
  return conclude_attempt(n, std::move(error), o);
}

run::attempt_end run::conclude_attempt(node_id n, std::exception_ptr e, std::uint8_t ok) noexcept {
  node_state& s = nodes_[n];
  if (!e) {
    s.outcome.store(ok, std::memory_order_release);
    return attempt_end::done;
  }
  const op_runtime* op = info(n).op;
  if (op && op->policy && schedule_retry(n, e)) return attempt_end::retrying;
  record_error(n, std::move(e));
  s.outcome.store(threw, std::memory_order_release);
  return attempt_end::done;
}

// ---- ordering -----------------------------------------------------------------------------

std::uint64_t run::order_key(node_id n) noexcept {
  // Calls in the order they first waited, nodes of a call in program order.
  std::uint64_t base = order_base_.load(std::memory_order_relaxed);
  if (base == 0) {
    const std::uint64_t mine = token_source::next_order();
    if (order_base_.compare_exchange_strong(base, mine, std::memory_order_relaxed)) base = mine;
  }
  return base | n;
}

void run::add_waiting(waiting_node w) {
  std::lock_guard lock(error_mutex_);
  waiting_.push_back(w);
}

void run::remove_waiting(node_id n) noexcept {
  std::lock_guard lock(error_mutex_);
  auto it = std::find_if(waiting_.begin(), waiting_.end(),
                         [n](const waiting_node& w) { return w.n == n; });
  if (it != waiting_.end()) {
    *it = waiting_.back();
    waiting_.pop_back();
  }
}

void run::end_waits() noexcept {
  // Taken in turns outside the lock: cancel_timer waits for a retry that is firing, which
  // takes the lock.
  for (;;) {
    waiting_node w{};
    {
      std::lock_guard lock(error_mutex_);
      auto it = std::find_if(waiting_.begin(), waiting_.end(), [](const waiting_node& x) {
        return x.what != wait_kind::retry || x.timer != 0;
      });
      if (it == waiting_.end()) return;
      w = *it;
      *it = waiting_.back();
      waiting_.pop_back();
    }
    // Exactly one of the wait's end and this withdrawal happens: if it wins, the node goes
    // back to the queue from here, and must_skip() skips it.
    const op_policy& pol = *info(w.n).op->policy;
    bool withdrawn = false;
    switch (w.what) {
      case wait_kind::tokens:
        withdrawn = pol.bucket->withdraw(*this, w.n);
        break;
      case wait_kind::retry:
        withdrawn = cancel_timer(w.timer);
        break;
      case wait_kind::cache:
        withdrawn = pol.cache->withdraw(nodes_[w.n].cache->key, *this, w.n);
        break;
    }
    if (withdrawn) {
      push(w.n);
      share(kWakeNsForPolicies, wake::always);
      helpers_inside.fetch_sub(1, std::memory_order_release);  // taken when it began to wait
    }
  }
}

// ---- the result cache ---------------------------------------------------------------------

run::cache_look run::look_up(node_id n) noexcept {
  const node_layout& ni = info(n);
  const op_policy& pol = *ni.op->policy;
  node_state& s = nodes_[n];
  try {
    if (!s.cache) s.cache = std::make_unique<cache_slot>();
    cache_slot& c = *s.cache;
    if (c.step == cache_step::filled) return from_cache(n, std::exchange(c.value, nullptr));
    if (c.step != cache_step::unasked) return cache_look::miss;  // the owner (or its retry)
    c.key.assign(pol.cache_prefix);
    ni.kernel->cache->key(c.key, &inputs_[ni.first_input]);
    // A hit asks the store once; a miss again, to own the key or wait for its owner.
    if (std::shared_ptr<const void> kept = pol.cache->find(c.key)) return from_cache(n, kept);
    // Counted as a helper (and listed, for a stop) before a callback can come.
    helpers_inside.fetch_add(1, std::memory_order_relaxed);
    cache_store::join_result r;
    try {
      add_waiting({n, 0, wait_kind::cache});
      c.step = cache_step::waiting;  // before join(): a callback may follow at once
      r = pol.cache->join(c.key, pol.query(ni.kernel->cache->codec), *this, n);
    } catch (...) {
      c.step = cache_step::unasked;
      remove_waiting(n);
      helpers_inside.fetch_sub(1, std::memory_order_relaxed);
      throw;
    }
    if (r.status == cache_store::join_status::waiting) return cache_look::parked;
    remove_waiting(n);
    helpers_inside.fetch_sub(1, std::memory_order_relaxed);
    if (r.status == cache_store::join_status::hit) return from_cache(n, r.value);
    c.step = cache_step::owner;
    c.miss = true;
    return cache_look::miss;
  } catch (...) {
    // The key's encoding threw (a user's xcs_cache_key, or no memory): the node fails with it.
    record_error(n, std::current_exception());
    s.outcome.store(threw, std::memory_order_release);
    return cache_look::failed;
  }
}

run::cache_look run::from_cache(node_id n, const std::shared_ptr<const void>& value) noexcept {
  node_state& s = nodes_[n];
  s.cache->step = cache_step::done;
  s.cache->hit = true;
  try {
    info(n).kernel->cache->copy(s.out, value.get());
  } catch (...) {
    record_error(n, std::current_exception());  // the result's copy threw
    s.outcome.store(threw, std::memory_order_release);
    return cache_look::failed;
  }
  s.outcome.store(constructed, std::memory_order_release);
  return cache_look::hit;
}

void run::end_flight(node_id n) noexcept {
  node_state& s = nodes_[n];
  cache_slot& c = *s.cache;
  c.step = cache_step::done;
  const node_layout& ni = info(n);
  cache_store& store = *ni.op->policy->cache;
  if (s.outcome.load(std::memory_order_relaxed) == constructed) {
    std::shared_ptr<const void> copy;
    try {
      copy = ni.kernel->cache->keep(s.out);
    } catch (...) {
      // No memory, or the copy threw: not kept; the next waiter computes it again.
    }
    if (copy) {
      store.fill(c.key, std::move(copy));
      return;
    }
  }
  store.abandon(c.key);  // errors are not cached: the next waiter owns the key
}

void run::cache_filled(std::uint32_t n, std::shared_ptr<const void> value) noexcept {
  remove_waiting(n);
  cache_slot& c = *nodes_[n].cache;
  c.value = std::move(value);
  c.step = cache_step::filled;
  push(n);
  share(kWakeNsForPolicies, wake::always);
  helpers_inside.fetch_sub(1, std::memory_order_release);  // taken when it joined
}

void run::cache_owned(std::uint32_t n) noexcept {
  remove_waiting(n);
  cache_slot& c = *nodes_[n].cache;
  c.step = cache_step::owner;
  c.miss = true;
  push(n);
  share(kWakeNsForPolicies, wake::always);
  helpers_inside.fetch_sub(1, std::memory_order_release);  // taken when it joined
}

// ---- rate limits --------------------------------------------------------------------------

run::token_step run::take_tokens(node_id n) noexcept {
  const node_layout& ni = info(n);
  const op_policy& pol = *ni.op->policy;
  node_state& s = nodes_[n];
  try {
    double tokens = 1.0;
    if (ni.kernel->weigh) tokens = ni.kernel->weigh(pol.weight, &inputs_[ni.first_input]);
    check_tokens(*ni.op, tokens);
    s.wait_from = ticks();
    // Counted as a helper (and listed, for a stop) before it can be granted.
    helpers_inside.fetch_add(1, std::memory_order_relaxed);
    bool taken = false;
    try {
      add_waiting({n, 0, wait_kind::tokens});
      taken = pol.bucket->acquire_or_queue(*this, n, tokens, order_key(n));
    } catch (...) {
      remove_waiting(n);
      helpers_inside.fetch_sub(1, std::memory_order_relaxed);
      throw;
    }
    if (!taken) return token_step::parked;
    remove_waiting(n);
    helpers_inside.fetch_sub(1, std::memory_order_relaxed);
    s.holds_tokens = true;
    return token_step::taken;
  } catch (...) {
    // A bad weight (xcs::error), the weight function's own exception, a source that failed
    // at once (xcs::error), or no memory: the node fails with it, as an attempt would.
    record_error(n, std::current_exception());
    s.outcome.store(threw, std::memory_order_release);
    return token_step::failed;
  }
}

void run::tokens_granted(std::uint32_t n) noexcept {
  node_state& s = nodes_[n];
  remove_waiting(n);
  s.holds_tokens = true;
  s.rate_wait += ticks() - s.wait_from;
  push(n);
  share(kWakeNsForPolicies, wake::always);
  helpers_inside.fetch_sub(1, std::memory_order_release);  // taken when it queued
}

void run::tokens_failed(std::uint32_t n, std::exception_ptr e) noexcept {
  node_state& s = nodes_[n];
  remove_waiting(n);
  s.rate_wait += ticks() - s.wait_from;
  record_error(n, std::move(e));
  s.token_error = true;  // run_chain fails the node instead of asking again
  push(n);
  share(kWakeNsForPolicies, wake::always);
  helpers_inside.fetch_sub(1, std::memory_order_release);  // taken when it queued
}

// ---- retries ------------------------------------------------------------------------------

bool run::schedule_retry(node_id n, const std::exception_ptr& e) noexcept {
  node_state& s = nodes_[n];
  const op_policy& pol = *info(n).op->policy;
  if (!pol.retries(e, s.attempts)) return false;
  // The call is over (stopped, or an earlier node failed): the failure stands.
  if (must_skip(n)) return false;
  const auto due =
      std::chrono::steady_clock::now() + std::chrono::nanoseconds(pol.backoff_ns(s.attempts));
  if (bounded_ && due >= limits_.deadline) return false;  // no attempt after the deadline
  // The next attempt takes a permit and tokens of its own.
  s.holds_permit = false;
  s.holds_tokens = false;
  helpers_inside.fetch_add(1, std::memory_order_relaxed);
  try {
    add_waiting({n, 0, wait_kind::retry});
  } catch (...) {
    helpers_inside.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  std::uint64_t id = 0;
  try {
    id = add_timer(due, &run::retry_due, this, n);
  } catch (...) {
    // No timer: the failure stands. (retry_due never runs, so the node is still listed.)
    remove_waiting(n);
    helpers_inside.fetch_sub(1, std::memory_order_relaxed);
    return false;
  }
  {
    // Armed: a stop may cancel it from now on (unless it fired already and left the list).
    std::lock_guard lock(error_mutex_);
    for (waiting_node& w : waiting_) {
      if (w.n == n) w.timer = id;
    }
  }
  return true;
}

void run::retry_due(void* r, std::uint64_t node) noexcept {
  run& self = *static_cast<run*>(r);
  const auto n = static_cast<node_id>(node);
  self.remove_waiting(n);
  self.push(n);
  self.share(kWakeNsForPolicies, wake::always);
  self.helpers_inside.fetch_sub(1, std::memory_order_release);  // taken when it was scheduled
}

// ---- timeouts -----------------------------------------------------------------------------

/// One attempt of an op with a timeout. The op's thread and the timer race to end it (`state`):
/// the op, by returning; the timer, at the timeout, by failing the attempt with
/// xcs::timeout_error and going on with the node. The op's thread frees it either way.
struct run::attempt {
  enum : std::uint8_t { running = 0, finished = 1, timed_out = 2 };
  run* r;
  node_id n;
  std::atomic<std::uint8_t> state{running};
  std::uint64_t timer = 0;
  async_slot slot;                       // an async op's start
  std::unique_ptr<std::byte[]> storage;  // the result, until it is moved to the node's
  void* out = nullptr;
};

void* run::attempt_out(attempt* at) noexcept { return at->out; }
async_slot& run::attempt_slot(attempt* at) noexcept { return at->slot; }

run::attempt* run::begin_attempt(node_id n, bool) noexcept {
  const node_layout& ni = info(n);
  // Without a way to move the result, or without memory, the attempt has no timeout.
  if (ni.kernel->size && !ni.kernel->relocate) return nullptr;
  try {
    auto at = std::make_unique<attempt>();
    at->r = this;
    at->n = n;
    if (ni.kernel->size) {
      at->storage.reset(new std::byte[ni.kernel->size + ni.kernel->align]);
      auto p = reinterpret_cast<std::uintptr_t>(at->storage.get());
      p = (p + ni.kernel->align - 1) / ni.kernel->align * ni.kernel->align;
      at->out = reinterpret_cast<void*>(p);
    }
    const auto due =
        std::chrono::steady_clock::now() + std::chrono::nanoseconds(ni.op->policy->timeout_ns);
    at->timer = add_timer(due, &run::attempt_timed_out, at.get(), 0);
    return at.release();
  } catch (...) {
    return nullptr;
  }
}

bool run::claim(attempt* at) noexcept {
  std::uint8_t running = attempt::running;
  if (!at->state.compare_exchange_strong(running, attempt::finished, std::memory_order_acq_rel)) {
    return false;
  }
  cancel_timer(at->timer);  // waits for a timer that is firing: it loses, and lets go of `at`
  return true;
}

void run::free_attempt(attempt* at) noexcept { delete at; }

void run::discard(attempt* at, bool has_value) noexcept {
  if (has_value) info(at->n).kernel->destroy(at->out);
  delete at;
  stragglers_.fetch_sub(1, std::memory_order_release);  // the last touch of the run
}

void run::attempt_timed_out(void* p, std::uint64_t) noexcept {
  auto* at = static_cast<attempt*>(p);
  run& self = *at->r;
  const node_id n = at->n;
  // Counted before the claim: the op's thread, once it sees it lost, uncounts it.
  self.stragglers_.fetch_add(1, std::memory_order_acq_rel);
  std::uint8_t running = attempt::running;
  if (!at->state.compare_exchange_strong(running, attempt::timed_out, std::memory_order_acq_rel)) {
    self.stragglers_.fetch_sub(1, std::memory_order_relaxed);
    return;  // the op finished first
  }
  // From here `at` belongs to the op's thread. The node goes on without the attempt.
  node_state& s = self.nodes_[n];
  ++s.timeouts;
  const op_runtime& op = *self.info(n).op;
  std::stop_source source{std::nostopstate};
  {
    std::lock_guard lock(self.error_mutex_);
    source = s.stop;
  }
  source.request_stop();  // outside the lock: the op's stop callback may complete it
  std::exception_ptr e;
  try {
    throw timeout_error(fmt::format("xcs: op '{}' timed out after {}", op.name,
                                    describe_ns(static_cast<std::int64_t>(op.policy->timeout_ns))));
  } catch (...) {
    e = std::current_exception();
  }
  if (self.conclude_attempt(n, std::move(e), 0) == attempt_end::done) {
    self.release(n, successor_use::queue_all);
    self.finish(n);
  }
}

}  // namespace xcs::detail
