// SPDX-License-Identifier: MIT
// The CPU workers: finding work, the sleep protocol, resuming fibers, and stand-in workers.
#include "pool.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <thread>

#include <pthread.h>

#include "blocking_lane.hpp"
#include "fiber.hpp"
#include "xcs/error.hpp"
#include "xcs/executor.hpp"

namespace xcs::detail {
namespace {

/// Stand-in workers (added while others wait in ops) leave after this long idle.
constexpr auto kSurplusIdle = std::chrono::milliseconds(100);
constexpr std::uint32_t kMaxSurplus = 256;
/// Rounds a worker looks for work (yielding between them) before it sleeps.
constexpr int kSpinRounds = 64;

std::atomic<pool*> g_instance{nullptr};
std::mutex g_instance_mutex;
unsigned g_requested_workers = 0;  // guarded by g_instance_mutex; 0 = default
thread_local bool t_surplus = false;

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

struct pool::worker {
  std::thread thread;
  bool stop = false;  // guarded by pool::mutex_
  bool surplus = false;
  bool retired = false;  // a stand-in that already took itself off surplus_
  /// Its thread's fibers (base workers; only that thread touches it). Held here, reachable
  /// from the pool, rather than on the thread's own stack, which LeakSanitizer does not scan
  /// while the thread runs on a fiber.
  std::unique_ptr<fiber_worker> fibers;
};

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

void pool::start_worker(bool surplus) {
  auto w = std::make_unique<worker>();
  w->surplus = surplus;
  worker* raw = w.get();
  if (surplus) {
    // A stand-in owns and deletes its `worker`; it may do so before this returns.
    std::thread([this, raw] { worker_loop(raw); }).detach();
    w.release();
    return;
  }
  workers_.reserve(workers_.size() + 1);  // so that push_back below cannot throw
  raw->thread = std::thread([this, raw] { worker_body(raw); });
  workers_.push_back(w.release());  // counted only now that its thread exists
}

void pool::worker_body(worker* w) {
  try {
    w->fibers =
        std::make_unique<fiber_worker>([this, w] { worker_loop(w); }, [this] { fiber_ready(); });
  } catch (...) {
    // Without fibers a waiting node parks its thread; the monitor then adds a stand-in.
  }
  worker_loop(w);
  w->fibers.reset();  // back on the thread's own stack: ends the spare fibers
}

void pool::resize(unsigned n) {
  if (n == 0) throw error("xcs: the pool needs at least one worker");
  std::vector<worker*> old;
  {
    std::lock_guard lock(mutex_);
    for (worker* w : workers_) {
      if (w->thread.get_id() == std::this_thread::get_id()) {
        throw error("xcs: set_thread_count() called from a worker thread");
      }
      w->stop = true;
    }
    old.swap(workers_);
  }
  work_cv_.notify_all();
  for (worker* w : old) {
    w->thread.join();
    delete w;
  }
  std::lock_guard lock(mutex_);
  start_workers(n);
}

void pool::offer(job& j) {
  {
    std::lock_guard lock(mutex_);
    if (j.listed_) return;
    j.listed_ = true;
    j.prev_ = tail_;
    j.next_ = nullptr;
    (tail_ ? tail_->next_ : head_) = &j;
    tail_ = &j;
  }
  wake_monitor();  // after the unlock: see monitor_state::asleep
}

void pool::retract(job& j) noexcept {
  {
    std::lock_guard lock(mutex_);
    if (j.listed_) {
      (j.prev_ ? j.prev_->next_ : head_) = j.next_;
      (j.next_ ? j.next_->prev_ : tail_) = j.prev_;
      j.listed_ = false;
    }
  }
  // Helpers still inside only find the job drained and leave; they may have been preempted,
  // so yield rather than spin hard.
  while (j.helpers_inside.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

void pool::fiber_ready() noexcept {
  // Rare (a waiting node's run finished): wake every sleeper, the owner among them. The lock
  // orders this with a sleeper's check of has_ready() under it.
  { std::lock_guard lock(mutex_); }
  work_cv_.notify_all();
}

bool pool::idle_workers() const noexcept {
  return searching_.load(std::memory_order_seq_cst) == 0 &&
         sleepers_.load(std::memory_order_seq_cst) > 0;
}

void pool::wake() noexcept {
  if (!idle_workers()) return;
  {
    std::lock_guard lock(mutex_);
    ++wake_tokens_;
  }
  work_cv_.notify_one();
}

job* pool::take_job() noexcept {
  for (job* j = head_; j; j = j->next_) {
    if (!j->has_work()) continue;
    j->helpers_inside.fetch_add(1, std::memory_order_relaxed);
    // Rotate so that concurrent runs share the workers fairly.
    if (j != tail_) {
      (j->prev_ ? j->prev_->next_ : head_) = j->next_;
      j->next_->prev_ = j->prev_;
      j->prev_ = tail_;
      j->next_ = nullptr;
      tail_->next_ = j;
      tail_ = j;
    }
    return j;
  }
  return nullptr;
}

bool pool::head_has_work() const noexcept {
  for (job* j = head_; j; j = j->next_) {
    if (j->has_work()) return true;
  }
  return false;
}

// A worker is counted in searching_ while it looks for work (not while it runs a job or
// sleeps), and in sleepers_ while it sleeps; wake() and the monitor read both.
void pool::worker_loop(worker* w) {
  t_surplus = w->surplus;
  searching_.fetch_add(1, std::memory_order_seq_cst);
  int spins = 0;
  for (;;) {
    if (w->surplus && retire_surplus()) {
      w->retired = true;
      break;
    }
    fiber_worker* fibers = fiber_worker::current();
    if (fibers && fibers->has_ready()) {
      resume_fibers();
      spins = 0;
      continue;
    }
    job* j = nullptr;
    next_step step = find_job(*w, spins, j);
    if (step == next_step::leave) break;
    if (step == next_step::run) {
      run_job(*j);
      spins = 0;
    }
  }
  searching_.fetch_sub(1, std::memory_order_seq_cst);
  if (w->surplus) {
    if (!w->retired) surplus_.fetch_sub(1, std::memory_order_relaxed);
    delete w;
  }
}

void pool::resume_fibers() {
  // A node waiting on an inner run can go on: it resumes here, on its own thread. This
  // context becomes a spare loop until it is used again.
  searching_.fetch_sub(1, std::memory_order_seq_cst);
  fiber_worker::current()->run_ready();
  searching_.fetch_add(1, std::memory_order_seq_cst);
}

pool::next_step pool::find_job(worker& w, int& spins, job*& j) {
  fiber_worker* fibers = fiber_worker::current();
  std::unique_lock lock(mutex_);
  if (w.stop && (!fibers || fibers->idle())) {
    if (fibers && !fibers->on_main()) {
      // Only the thread's own stack may end the thread: hand this loop's count over to it.
      lock.unlock();
      searching_.fetch_sub(1, std::memory_order_seq_cst);
      fibers->return_to_main();
    }
    return next_step::leave;
  }
  j = take_job();
  if (j) return next_step::run;
  if (++spins < kSpinRounds) {
    lock.unlock();
    std::this_thread::yield();
    return next_step::retry;
  }
  spins = 0;
  return sleep(w, lock, j);
}

pool::next_step pool::sleep(worker& w, std::unique_lock<std::mutex>& lock, job*& j) {
  // Sleep protocol: count ourselves as a sleeper (seq_cst), then look once more. A thread
  // that publishes work (seq_cst) and then reads sleepers_ (seq_cst, in wake()) either sees
  // us and wakes us, or we see its work here.
  searching_.fetch_sub(1, std::memory_order_seq_cst);
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  j = take_job();
  next_step step = next_step::run;
  if (!j) {
    fiber_worker* fibers = fiber_worker::current();
    auto ready = [&] {
      return wake_tokens_ > 0 || w.stop || head_has_work() || (fibers && fibers->has_ready());
    };
    bool woken = true;
    if (w.surplus) {
      woken = work_cv_.wait_for(lock, kSurplusIdle, ready);
    } else {
      work_cv_.wait(lock, ready);
    }
    if (wake_tokens_ > 0) --wake_tokens_;
    step = woken ? next_step::retry : next_step::leave;  // an idle stand-in leaves
  }
  sleepers_.fetch_sub(1, std::memory_order_seq_cst);
  searching_.fetch_add(1, std::memory_order_seq_cst);
  return step;
}

void pool::run_job(job& j) noexcept {
  // Found work: if more is waiting, let another sleeper look too (a wake chain).
  searching_.fetch_sub(1, std::memory_order_seq_cst);
  if (j.has_work()) wake();
  j.help();
  j.helpers_inside.fetch_sub(1, std::memory_order_release);
  searching_.fetch_add(1, std::memory_order_seq_cst);
}

bool pool::surplus_should_leave() noexcept {
  if (!t_surplus) return false;
  pool* p = started();
  return p && p->surplus_.load(std::memory_order_relaxed) > stand_ins_wanted();
}

bool pool::retire_surplus() noexcept {
  // More stand-ins than threads waiting: this one leaves, so CPU work does not run on more
  // threads than there are cores once the waiting is over.
  std::uint32_t n = surplus_.load(std::memory_order_relaxed);
  while (n > stand_ins_wanted()) {
    if (surplus_.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

void pool::balance(std::uint32_t running, std::uint32_t wanted, unsigned cores) noexcept {
  std::lock_guard lock(mutex_);
  // A core is idle while work waits: threads waiting in ops, or owners parked on their runs,
  // hold no core. Two ticks in a row, so a worker that is just waking up is not replaced.
  bool starved = running < cores && searching_.load() == 0 && head_has_work();
  if (starved && starved_last_tick_) {
    if (sleepers_.load() > 0) {
      ++wake_tokens_;
      work_cv_.notify_one();
    } else if (surplus_.load(std::memory_order_relaxed) < std::min(wanted, kMaxSurplus)) {
      // One stand-in per thread that waits, and no more: one beyond that would leave at once.
      surplus_.fetch_add(1, std::memory_order_relaxed);
      try {
        start_worker(true);
      } catch (...) {
        surplus_.fetch_sub(1, std::memory_order_relaxed);  // no thread to be had now
      }
    }
  }
  starved_last_tick_ = starved;
}

bool pool::has_jobs() noexcept {
  std::lock_guard lock(mutex_);
  return head_ != nullptr;
}

void pool::forget_after_fork() noexcept {
  g_instance.store(nullptr, std::memory_order_relaxed);
  t_surplus = false;
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
