// SPDX-License-Identifier: MIT
// The one pool of a process: made on first use, sized by XCS_THREADS or set_thread_count(),
// forgotten in a fork()ed child, and how it reports what it could not start.
#include <fmt/format.h>

#include <cstdlib>
#include <mutex>

#include <pthread.h>

#include "blocking_lane.hpp"
#include "monitor.hpp"
#include "pool.hpp"
#include "xcs/error.hpp"
#include "xcs/executor.hpp"

namespace xcs::detail {
namespace {

std::atomic<pool*> g_instance{nullptr};
std::mutex g_instance_mutex;
unsigned g_requested_workers = 0;  // guarded by g_instance_mutex; 0 = default

unsigned default_workers() {
  if (const char* env = std::getenv("XCS_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return static_cast<unsigned>(n);
  }
  unsigned cpus = xcs::available_cpus();
  return cpus > 1 ? cpus - 1 : 1;
}

// fork(): the child has only the forking thread, so the pool, the lane and the monitor are
// forgotten there (leaked: their threads do not exist, their locks may be held) and the next
// plan starts afresh. g_instance_mutex is held across fork() so the child gets it unlocked
// and no pool is half made.
void lock_for_fork() noexcept { g_instance_mutex.lock(); }
void unlock_in_parent() noexcept { g_instance_mutex.unlock(); }
void forget_in_child() noexcept {
  g_instance_mutex.unlock();
  pool::forget_after_fork();
  forget_lane_after_fork();
  forget_monitor_after_fork();
}
[[maybe_unused]] const int g_fork_handlers =
    pthread_atfork(lock_for_fork, unlock_in_parent, forget_in_child);

}  // namespace

pool& pool::instance() {
  if (pool* p = g_instance.load(std::memory_order_acquire)) return *p;
  std::lock_guard lock(g_instance_mutex);
  if (pool* p = g_instance.load(std::memory_order_relaxed)) return *p;
  auto* p = new pool();  // never deleted, see the header
  g_instance.store(p, std::memory_order_release);
  return *p;
}

pool* pool::started() noexcept { return g_instance.load(std::memory_order_acquire); }

pool::pool() {
  unsigned n = g_requested_workers ? g_requested_workers : default_workers();
  {
    std::lock_guard lock(mutex_);
    start_workers(n);
  }
  // Without the monitor, ops are moved to the blocking lane only by their hint; degradation()
  // says so.
  monitor_started_ = start_monitor(*this);
}

void pool::start_workers(unsigned n) {
  requested_ = n;
  // Short of memory or threads, run with what could be started: callers run their own runs,
  // so even no worker at all is slow, not wrong. degradation() tells.
  try {
    for (unsigned i = 0; i < n; ++i) start_worker(false);
  } catch (...) {
  }
}

unsigned pool::worker_count() const noexcept {
  std::lock_guard lock(mutex_);
  return static_cast<unsigned>(workers_.size());
}

std::string pool::degradation() const {
  std::string out;
  {
    std::lock_guard lock(mutex_);
    if (workers_.size() < requested_) {
      out = fmt::format("{} of {} workers started", workers_.size(), requested_);
    }
  }
  if (!monitor_started_) {
    if (!out.empty()) out += "; ";
    out += "the blocking monitor could not start; blocking ops are found only by hint";
  }
  return out;
}

void pool::forget_after_fork() noexcept {
  g_instance.store(nullptr, std::memory_order_relaxed);
  forget_thread_after_fork();
}

}  // namespace xcs::detail

namespace xcs {

void set_thread_count(unsigned n) {
  {
    std::lock_guard lock(detail::g_instance_mutex);
    if (!detail::g_instance.load()) {
      if (n == 0) throw error("xcs: the pool needs at least one worker");
      detail::g_requested_workers = n;
      return;
    }
  }
  detail::pool::instance().resize(n);
}

unsigned thread_count() {
  if (auto* p = detail::pool::started()) return p->worker_count();
  std::lock_guard lock(detail::g_instance_mutex);
  return detail::g_requested_workers ? detail::g_requested_workers : detail::default_workers();
}

bool pool_started() noexcept { return detail::pool::started() != nullptr; }

}  // namespace xcs
