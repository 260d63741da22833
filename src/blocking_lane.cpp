// SPDX-License-Identifier: MIT
// The blocking lane.
#include "blocking_lane.hpp"

#include <algorithm>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <new>
#include <thread>

#include "xcs/error.hpp"
#include "xcs/executor.hpp"

namespace xcs::detail {
namespace {

/// The most lane threads at once. Relaxed: read when a thread might be started, and a change
/// takes effect from the next task.
std::atomic<std::uint32_t> g_lane_limit{kDefaultLaneThreads};

/// The lane's state. Allocated once and never freed, so that lane threads can outlive
/// static destruction; replaced (leaked) in a child after fork().
struct lane {
  std::mutex mutex;  // guards tasks, idle, threads, peak
  std::condition_variable cv;
  std::deque<std::function<void()>> tasks;
  /// Threads waiting for a task plus threads started but not yet waiting.
  std::uint32_t idle = 0;
  std::uint32_t threads = 0;
  std::uint32_t peak = 0;
};

std::atomic<lane*> g_lane{nullptr};
thread_local bool t_on_lane = false;

lane& the_lane() {
  if (lane* l = g_lane.load(std::memory_order_acquire)) return *l;
  auto* fresh = new lane;
  lane* expected = nullptr;
  if (g_lane.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *expected;
}

void lane_loop(lane& l) {
  t_on_lane = true;
  std::unique_lock lock(l.mutex);
  for (;;) {
    if (!l.cv.wait_for(lock, kLaneIdle, [&] { return !l.tasks.empty(); })) break;
    std::function<void()> task = std::move(l.tasks.front());
    l.tasks.pop_front();
    --l.idle;
    lock.unlock();
    task();
    task = nullptr;
    lock.lock();
    ++l.idle;
  }
  --l.idle;
  --l.threads;
}

}  // namespace

void run_blocking(std::function<void()> task) {
  lane& l = the_lane();
  std::unique_lock lock(l.mutex);
  l.tasks.push_back(std::move(task));
  if (l.tasks.size() > l.idle && l.threads < g_lane_limit.load(std::memory_order_relaxed)) {
    ++l.threads;
    ++l.idle;
    try {
      std::thread([&l] { lane_loop(l); }).detach();
    } catch (...) {
      // No thread: give the task back to the caller rather than leave it queued, where a
      // busy lane thread might run it much later (or, after the caller ran it, a second time).
      --l.threads;
      --l.idle;
      l.tasks.pop_back();
      throw;
    }
    l.peak = std::max(l.peak, l.threads);
    return;
  }
  lock.unlock();
  l.cv.notify_one();
}

bool on_blocking_lane() noexcept { return t_on_lane; }

std::uint32_t lane_threads_peak() noexcept {
  lane* l = g_lane.load(std::memory_order_acquire);
  if (!l) return 0;
  std::lock_guard lock(l->mutex);
  return l->peak;
}

void forget_lane_after_fork() noexcept {
  // The parent's lane may have been locked by a thread that does not exist here: leak it.
  g_lane.store(nullptr, std::memory_order_relaxed);
}

}  // namespace xcs::detail

namespace xcs {

void set_blocking_lane_limit(unsigned n) {
  if (n == 0) throw error("xcs::set_blocking_lane_limit: the limit must be at least 1");
  detail::g_lane_limit.store(n, std::memory_order_relaxed);
}

unsigned blocking_lane_limit() noexcept {
  return detail::g_lane_limit.load(std::memory_order_relaxed);
}

unsigned blocking_lane_peak() noexcept { return detail::lane_threads_peak(); }

}  // namespace xcs
