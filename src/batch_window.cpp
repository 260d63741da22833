// SPDX-License-Identifier: MIT
// xcs::batch_window: the batches of one op handed over within a window go as one.
#include "batch_window.hpp"

#include <chrono>
#include <exception>
#include <utility>

#include "blocking_lane.hpp"
#include "timer.hpp"
#include "xcs/detail/async.hpp"

namespace xcs::detail {
namespace {

void batch_calls_fail(std::span<const batch_item> items, const std::exception_ptr& e) noexcept {
  for (const batch_item& it : items) {
    it.slot->done_error = e;
    completion_arrives(*it.slot);
  }
}

}  // namespace

batch_sender::batch_sender(std::size_t cap, bool holds_thread, std::uint64_t window_ns)
    : max_batch(cap),
      sends_on_thread(holds_thread),
      window_(window_ns ? std::make_unique<batch_window>(*this, window_ns) : nullptr) {}

batch_sender::~batch_sender() = default;

void batch_sender::send(std::span<const batch_item> items, batch_counts* counts) noexcept {
  if (window_) {
    window_->add(items, counts);
  } else {
    send_now(items, counts);
  }
}

batch_window::~batch_window() {
  // Nothing waits: every waiting call keeps the op alive. A timer may still be armed for a
  // window already sent (by a full batch); it must not run on a freed window.
  std::uint64_t timer;
  {
    std::lock_guard lock(mutex_);
    timer = std::exchange(timer_, 0);
  }
  if (timer) cancel_timer(timer);
}

void batch_window::add(std::span<const batch_item> items, batch_counts* counts) noexcept {
  if (counts) *counts = batch_counts{};
  std::vector<taken> full;  // batches of max_batch calls, sent from here
  std::uint64_t stale = 0;  // a timer whose window was sent full
  bool in = false;          // the caller's calls are among the waiting ones
  try {
    std::lock_guard lock(mutex_);
    if (waiting_.empty()) first_counter_ = counts;
    waiting_.insert(waiting_.end(), items.begin(), items.end());
    in = true;
    const std::size_t cap = sender_.max_batch;
    while (cap && waiting_.size() >= cap) {
      const auto head = waiting_.begin() + static_cast<std::ptrdiff_t>(cap);
      std::vector<batch_item> chunk(waiting_.begin(), head);
      full.emplace_back();  // a throw up to here has taken nothing out of waiting_
      full.back().items = std::move(chunk);
      full.back().counts = first_counter_;
      waiting_.erase(waiting_.begin(), head);
      first_counter_ = waiting_.empty() ? nullptr : counts;
      ++generation_;
      if (timer_) stale = std::exchange(timer_, 0);  // its window went full
    }
    if (!waiting_.empty() && !timer_) {
      const auto end = std::chrono::steady_clock::now() + std::chrono::nanoseconds(window_ns_);
      timer_ = add_timer(end, &due, this, generation_);
    }
  } catch (...) {
    // No memory, or no timer thread: nothing may wait. What waits goes now, the caller's
    // calls with it if they got in; if they did not, they fail with the exception.
    const std::exception_ptr e = std::current_exception();
    taken t;
    {
      std::lock_guard lock(mutex_);
      t.items.swap(waiting_);
      t.counts = first_counter_;
      first_counter_ = nullptr;
      ++generation_;
    }
    if (!in) batch_calls_fail(items, e);
    if (!t.items.empty()) send(std::move(t), false);
  }
  if (stale) cancel_timer(stale);
  for (taken& t : full) {
    if (!t.items.empty()) send(std::move(t), false);
  }
}

void batch_window::due(void* self, std::uint64_t generation) noexcept {
  auto* w = static_cast<batch_window*>(self);
  taken t;
  {
    std::lock_guard lock(w->mutex_);
    if (generation != w->generation_) return;  // sent full meanwhile
    t.items.swap(w->waiting_);
    t.counts = w->first_counter_;
    w->first_counter_ = nullptr;
    w->timer_ = 0;
    ++w->generation_;
  }
  if (!t.items.empty()) w->send(std::move(t), true);
}

void batch_window::send(taken t, bool from_timer) noexcept {
  if (from_timer && sender_.sends_on_thread) {
    // The timer thread runs short callbacks only: a sync function runs on the lane.
    try {
      batch_sender* s = &sender_;
      run_blocking([s, list = t.items, c = t.counts] { s->send_now(list, c); });
      return;
    } catch (...) {
      // No lane thread: send from here.
    }
  }
  sender_.send_now(t.items, t.counts);
}

}  // namespace xcs::detail
