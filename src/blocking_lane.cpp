// SPDX-License-Identifier: MIT
// The blocking lane: threads made as needed up to a limit, handed tasks most-recently-idle
// first, retiring after kLaneIdle without one.
#include "blocking_lane.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <deque>
#include <mutex>
#include <thread>
#include <utility>
#include <vector>

#include "xcs/error.hpp"
#include "xcs/executor.hpp"

namespace xcs::detail {
namespace {

/// A lane thread waiting for a task. Lives on that thread's stack; listed in lane::idle while
/// it waits, and handed a task (under lane::mutex) by the one who takes it off the list.
struct idle_slot {
  std::condition_variable cv;
  std::function<void()> task;
  bool retire = false;  // taken off the list, and out of lane::threads, by a lower limit
};

/// The lane's state. Allocated once and never freed, so that lane threads can outlive
/// static destruction; replaced (leaked) in a child after fork().
struct lane {
  std::mutex mutex;  // guards everything below
  /// Tasks waiting for a thread: at the limit, or until a thread just started takes them.
  std::deque<std::function<void()>> queue;
  /// Waiting threads, the most recently idle last: a new task goes to the back, so threads
  /// beyond what the load needs stay at the front, idle, until they retire.
  std::vector<idle_slot*> idle;
  /// Threads alive and serving: a thread that decides to retire leaves the count at once,
  /// so that busy threads over a lowered limit leave only while more than the limit remain.
  std::uint32_t threads = 0;
  std::uint32_t peak = 0;
};

std::atomic<lane*> g_lane{nullptr};
/// Stored under lane::mutex once the lane exists (relaxed: the mutex orders it); read under it.
std::atomic<std::uint32_t> g_limit{kDefaultLaneLimit};
thread_local bool t_on_lane = false;

lane& the_lane() {
  if (lane* l = g_lane.load(std::memory_order_acquire)) return *l;
  auto* fresh = new lane;
  lane* expected = nullptr;
  if (g_lane.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *expected;
}

bool over_limit(const lane& l) { return l.threads > g_limit.load(std::memory_order_relaxed); }

enum class idle_end { task, timed_out, retired };

/// Lists `slot` as idle and waits for a task, with `lock` held on entry and exit; the thread
/// retires instead after kLaneIdle, or when a lower limit retires it.
idle_end wait_for_task(lane& l, idle_slot& slot, std::unique_lock<std::mutex>& lock) {
  l.idle.push_back(&slot);
  const auto retire_at = std::chrono::steady_clock::now() + kLaneIdle;
  for (;;) {
    bool timed_out = slot.cv.wait_until(lock, retire_at) == std::cv_status::timeout;
    // Handed a task or retired: taken off the list by run_blocking or the limit.
    if (slot.task) return idle_end::task;
    if (slot.retire) return idle_end::retired;
    if (timed_out) {
      l.idle.erase(std::find(l.idle.begin(), l.idle.end(), &slot));
      return idle_end::timed_out;
    }
  }
}

void lane_loop(lane& l) {
  t_on_lane = true;
  idle_slot slot;
  std::unique_lock lock(l.mutex);
  for (;;) {
    std::function<void()> task;
    if (over_limit(l)) {
      --l.threads;
      break;
    }
    if (!l.queue.empty()) {
      task = std::move(l.queue.front());
      l.queue.pop_front();
    } else {
      idle_end end = wait_for_task(l, slot, lock);
      if (end == idle_end::retired) break;  // already out of the count
      if (end == idle_end::timed_out) {
        --l.threads;
        break;
      }
      task = std::exchange(slot.task, nullptr);
    }
    lock.unlock();
    task();
    task = nullptr;  // its captures go before the lock is taken
    lock.lock();
  }
}

/// Starts a thread that serves the queue, with l.mutex held and room under the limit.
void start_thread(lane& l) {
  ++l.threads;
  try {
    std::thread([&l] { lane_loop(l); }).detach();
  } catch (...) {
    --l.threads;
    throw;
  }
  l.peak = std::max(l.peak, l.threads);
}

}  // namespace

void run_blocking(std::function<void()> task) {
  lane& l = the_lane();
  std::lock_guard lock(l.mutex);
  if (!l.idle.empty()) {
    idle_slot* slot = l.idle.back();
    l.idle.pop_back();
    slot->task = std::move(task);
    // Under the lock: once it is released, the thread may run the task, go idle, retire and
    // take its slot with it.
    slot->cv.notify_one();
    return;
  }
  l.queue.push_back(std::move(task));
  if (l.threads < g_limit.load(std::memory_order_relaxed)) {
    try {
      start_thread(l);
    } catch (...) {
      // No thread: give the task back to the caller rather than leave it queued, where a
      // busy lane thread might run it much later (or, after the caller ran it, a second time).
      l.queue.pop_back();
      throw;
    }
  }
}

bool on_blocking_lane() noexcept { return t_on_lane; }

std::uint32_t lane_threads() noexcept {
  lane* l = g_lane.load(std::memory_order_acquire);
  if (!l) return 0;
  std::lock_guard lock(l->mutex);
  return l->threads;
}

std::uint32_t lane_threads_peak() noexcept {
  lane* l = g_lane.load(std::memory_order_acquire);
  if (!l) return 0;
  std::lock_guard lock(l->mutex);
  return l->peak;
}

void forget_lane_after_fork() noexcept {
  // The parent's lane may have been locked by a thread that does not exist here: leak it. The
  // limit is a setting and stays.
  g_lane.store(nullptr, std::memory_order_relaxed);
}

}  // namespace xcs::detail

namespace xcs {

void set_blocking_thread_limit(unsigned n) {
  if (n == 0) throw error("xcs: set_blocking_thread_limit(0): the blocking lane needs a thread");
  detail::lane* l = detail::g_lane.load(std::memory_order_acquire);
  if (!l) {
    detail::g_limit.store(n, std::memory_order_relaxed);
    return;
  }
  std::lock_guard lock(l->mutex);
  detail::g_limit.store(n, std::memory_order_relaxed);
  // Idle threads over the new limit retire now, longest idle first, and can no longer be
  // handed a task; busy ones retire when their task ends.
  std::size_t retire = 0;
  while (l->threads > n && retire < l->idle.size()) {
    detail::idle_slot* slot = l->idle[retire++];
    slot->retire = true;
    --l->threads;
    slot->cv.notify_one();  // under the lock: the slot lives on that thread's stack
  }
  l->idle.erase(l->idle.begin(), l->idle.begin() + static_cast<std::ptrdiff_t>(retire));
  // Under a raised limit, tasks that waited for a thread get one now (or, if none can be
  // started, keep waiting for a busy one).
  try {
    for (std::size_t i = 0; i < l->queue.size() && l->threads < n; ++i) detail::start_thread(*l);
  } catch (...) {
  }
}

unsigned blocking_thread_limit() noexcept {
  return detail::g_limit.load(std::memory_order_relaxed);
}

}  // namespace xcs
