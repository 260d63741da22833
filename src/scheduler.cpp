// SPDX-License-Identifier: MIT
// The process-wide pool: CPU workers, the blocking lane and the monitor.
#include "scheduler.hpp"

#include <pthread.h>
#include <sched.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdlib>
#include <optional>
#include <string>

#include "fiber.hpp"
#include "xcs/error.hpp"
#include "xcs/executor.hpp"

namespace xcs::detail {
namespace {

constexpr std::size_t kMaxParticipants = 1024;
/// A thread that stays in one node is checked for CPU use over windows of this length; under
/// a quarter of a CPU means it waits (I/O, sleep, a lock).
constexpr std::int64_t kWindowNs = 500'000;
constexpr auto kMonitorTick = std::chrono::microseconds(500);
/// The monitor sleeps after this long with nothing running.
constexpr std::int64_t kMonitorQuietNs = 200'000'000;
/// Surplus workers (added while others were stuck) leave after this long idle.
constexpr auto kSurplusIdle = std::chrono::milliseconds(100);
constexpr std::uint32_t kMaxSurplus = 256;
constexpr std::uint32_t kMaxLaneThreads = 1024;
constexpr auto kLaneIdle = std::chrono::seconds(2);
constexpr int kSpinRounds = 64;

std::array<participant, kMaxParticipants> g_participants;
std::atomic<scheduler*> g_instance{nullptr};
std::mutex g_instance_mutex;
thread_local bool t_on_lane = false;
thread_local bool t_surplus = false;

std::int64_t cpu_ns(clockid_t c) noexcept {
  timespec ts{};
  if (clock_gettime(c, &ts) != 0) return -1;
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

/// True if thread `tid` of this process is runnable ('R'): it waits for a core, not for I/O.
/// A thread the OS preempted looks like a blocked one by its CPU clock alone.
bool runnable(int tid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
  std::FILE* f = std::fopen(path, "r");
  if (!f) return false;
  char buf[512];
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  // The state follows the command name, which is in parentheses and may contain spaces.
  const char* close = std::strrchr(buf, ')');
  return close && close[1] == ' ' && close[2] == 'R';
}

/// Releases this thread's participant slot when the thread ends.
struct participant_handle {
  participant* slot = nullptr;
  ~participant_handle() {
    if (slot) {
      slot->op.store(nullptr, std::memory_order_relaxed);
      slot->ready.store(false, std::memory_order_relaxed);
      slot->used.store(false, std::memory_order_release);
    }
  }
};
thread_local participant_handle t_participant;
participant g_overflow;  // shared by threads beyond kMaxParticipants: never monitored

unsigned default_workers() {
  if (const char* env = std::getenv("XCS_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return static_cast<unsigned>(n);
  }
  unsigned hw = std::thread::hardware_concurrency();
  return hw > 1 ? hw - 1 : 1;
}

unsigned g_requested_workers = 0;  // guarded by g_instance_mutex; 0 = default

}  // namespace

std::int64_t thread_cpu_ns() noexcept { return cpu_ns(CLOCK_THREAD_CPUTIME_ID); }

struct scheduler::worker {
  std::thread thread;
  bool stop = false;  // guarded by scheduler::mutex_
  bool surplus = false;
  bool retired = false;  // a surplus worker that already took itself off surplus_
};

scheduler& scheduler::instance() {
  if (scheduler* s = g_instance.load(std::memory_order_acquire)) return *s;
  std::lock_guard lock(g_instance_mutex);
  if (scheduler* s = g_instance.load(std::memory_order_relaxed)) return *s;
  auto* s = new scheduler();  // never deleted, see the header
  g_instance.store(s, std::memory_order_release);
  return *s;
}

scheduler* scheduler::started() noexcept { return g_instance.load(std::memory_order_acquire); }

scheduler::scheduler() {
  unsigned n = g_requested_workers ? g_requested_workers : default_workers();
  std::lock_guard lock(mutex_);
  base_count_ = n;
  // Short of memory or threads, run with what could be started: callers run their own runs,
  // so even no worker at all is slow, not wrong. Nothing may throw once a thread runs.
  try {
    for (unsigned i = 0; i < n; ++i) start_worker(false);
    std::thread([this] { monitor_loop(); }).detach();
    threads_started_.fetch_add(1, std::memory_order_relaxed);
  } catch (...) {
  }
}

unsigned scheduler::worker_count() const noexcept {
  std::lock_guard lock(mutex_);
  return base_count_;
}

void scheduler::start_worker(bool surplus) {
  auto w = std::make_unique<worker>();
  w->surplus = surplus;
  if (surplus) {
    // A surplus worker owns and deletes its `worker`; it may do so before this returns.
    worker* raw = w.get();
    std::thread([this, raw] { worker_loop(raw); }).detach();
    w.release();
  } else {
    workers_.reserve(workers_.size() + 1);
    worker* raw = w.get();
    raw->thread = std::thread([this, raw] {
      std::optional<fiber_worker> fibers;
      if (fiber_worker::enabled()) {
        try {
          fibers.emplace([this, raw] { worker_loop(raw); });
        } catch (...) {
          // Without fibers a waiting node parks its thread; the monitor then adds a worker.
        }
      }
      worker_loop(raw);
    });
    workers_.push_back(w.release());
  }
  threads_started_.fetch_add(1, std::memory_order_relaxed);
}

void scheduler::resize(unsigned n) {
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
  base_count_ = n;
  for (unsigned i = 0; i < n; ++i) start_worker(false);
}

void scheduler::offer(job& j) {
  std::lock_guard lock(mutex_);
  if (j.listed_) return;
  j.listed_ = true;
  j.prev_ = tail_;
  j.next_ = nullptr;
  (tail_ ? tail_->next_ : head_) = &j;
  tail_ = &j;
  if (monitor_asleep_) monitor_cv_.notify_one();
}

void scheduler::retract(job& j) noexcept {
  {
    std::lock_guard lock(mutex_);
    if (j.listed_) {
      (j.prev_ ? j.prev_->next_ : head_) = j.next_;
      (j.next_ ? j.next_->prev_ : tail_) = j.prev_;
      j.listed_ = false;
    }
  }
  // Helpers still inside only find the job drained and leave; on 2 cores they may be
  // preempted, so yield rather than spin hard.
  while (j.helpers.load(std::memory_order_acquire) != 0) std::this_thread::yield();
}

void scheduler::fiber_ready() noexcept {
  // Rare (a waiting node's run finished): wake every sleeper, the owner among them.
  { std::lock_guard lock(mutex_); }
  work_cv_.notify_all();
}

void scheduler::wake() noexcept {
  if (!idle_workers()) return;
  {
    std::lock_guard lock(mutex_);
    ++wake_tokens_;
  }
  work_cv_.notify_one();
}

job* scheduler::take_job() {
  for (job* j = head_; j; j = j->next_) {
    if (j->has_work()) {
      j->helpers.fetch_add(1, std::memory_order_relaxed);
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
  }
  return nullptr;
}

void scheduler::worker_loop(worker* w) {
  t_surplus = w->surplus;
  searching_.fetch_add(1, std::memory_order_seq_cst);
  int spins = 0;
  fiber_worker* fibers = fiber_worker::current();
  for (;;) {
    job* j = nullptr;
    if (w->surplus && retire_surplus()) {
      w->retired = true;
      break;
    }
    if (fibers && fibers->has_ready()) {
      // A node waiting on an inner run can go on: it resumes here, on its own thread.
      searching_.fetch_sub(1, std::memory_order_seq_cst);
      fibers->run_ready();
      searching_.fetch_add(1, std::memory_order_seq_cst);
      spins = 0;
      continue;
    }
    {
      std::unique_lock lock(mutex_);
      if (w->stop && (!fibers || fibers->idle())) {
        if (fibers && !fibers->on_main()) {
          // Only the thread's own stack may end the thread: hand this loop's count over to it.
          lock.unlock();
          searching_.fetch_sub(1, std::memory_order_seq_cst);
          fibers->return_to_main();
        }
        break;
      }
      j = take_job();
      if (!j) {
        if (++spins < kSpinRounds) {
          lock.unlock();
          std::this_thread::yield();
          continue;
        }
        // Sleep protocol: count ourselves as a sleeper (seq_cst), then look once more. A
        // thread that publishes work (seq_cst) and then reads sleepers_ (seq_cst) either sees
        // us and wakes us, or we see its work here.
        searching_.fetch_sub(1, std::memory_order_seq_cst);
        sleepers_.fetch_add(1, std::memory_order_seq_cst);
        j = take_job();
        if (!j) {
          auto ready = [&] {
            return wake_tokens_ > 0 || w->stop || head_has_work() ||
                   (fibers && fibers->has_ready());
          };
          bool woken;
          if (w->surplus) {
            woken = work_cv_.wait_for(lock, kSurplusIdle, ready);
          } else {
            work_cv_.wait(lock, ready);
            woken = true;
          }
          if (wake_tokens_ > 0) --wake_tokens_;
          sleepers_.fetch_sub(1, std::memory_order_seq_cst);
          searching_.fetch_add(1, std::memory_order_seq_cst);
          if (!woken) break;  // an idle surplus worker leaves
          spins = 0;
          continue;
        }
        sleepers_.fetch_sub(1, std::memory_order_seq_cst);
        searching_.fetch_add(1, std::memory_order_seq_cst);
      }
    }
    // Found work: if more is waiting, let another sleeper look too (a wake chain).
    searching_.fetch_sub(1, std::memory_order_seq_cst);
    if (j->has_work()) wake();
    j->help();
    j->helpers.fetch_sub(1, std::memory_order_release);
    searching_.fetch_add(1, std::memory_order_seq_cst);
    spins = 0;
  }
  searching_.fetch_sub(1, std::memory_order_seq_cst);
  if (w->surplus) {
    if (!w->retired) surplus_.fetch_sub(1, std::memory_order_relaxed);
    delete w;
  }
}

void scheduler::unstuck() noexcept {
  std::uint32_t n = surplus_wanted_.load(std::memory_order_relaxed);
  while (n > 0 && !surplus_wanted_.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
  }
}

bool scheduler::surplus_should_leave() noexcept {
  if (!t_surplus) return false;
  scheduler* s = started();
  return s && s->surplus_.load(std::memory_order_relaxed) >
                  s->surplus_wanted_.load(std::memory_order_relaxed);
}

bool scheduler::retire_surplus() noexcept {
  // More surplus workers than threads stuck: this one leaves, so CPU work does not run on
  // more threads than there are cores once the waiting is over.
  std::uint32_t n = surplus_.load(std::memory_order_relaxed);
  while (n > surplus_wanted_.load(std::memory_order_relaxed)) {
    if (surplus_.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

bool scheduler::head_has_work() const noexcept {
  for (job* j = head_; j; j = j->next_) {
    if (j->has_work()) return true;
  }
  return false;
}

void scheduler::monitor_loop() {
  std::int64_t last_busy = now_ns();
  for (;;) {
    std::this_thread::sleep_for(kMonitorTick);
    std::int64_t now = now_ns();
    std::uint32_t running = 0, stuck = 0;
    for (participant& p : g_participants) {
      if (!p.ready.load(std::memory_order_acquire)) continue;
      std::uint32_t generation = p.generation.load(std::memory_order_relaxed);
      if (generation != p.seen_generation) {
        // Another thread took the slot since the last look: start afresh.
        p.seen_generation = generation;
        p.seen_seq = ~std::uint64_t{0};
        p.stuck_windows = 0;
      }
      op_profile* op = p.op.load(std::memory_order_relaxed);
      std::uint64_t seq = p.seq.load(std::memory_order_relaxed);
      if (!op) {
        p.seen_seq = ~std::uint64_t{0};
        continue;
      }
      last_busy = now;
      if (seq != p.seen_seq) {
        p.seen_seq = seq;
        p.seen_cpu = cpu_ns(p.cpu_clock);
        p.seen_wall = now;
        p.stuck_windows = 0;
        p.waiting.store(false, std::memory_order_relaxed);
        ++running;
        continue;
      }
      std::int64_t wall = now - p.seen_wall;
      if (wall >= kWindowNs) {
        // A full window in one node: waiting if it used little CPU and the thread is not
        // merely preempted (runnable, waiting for a core).
        std::int64_t cpu = cpu_ns(p.cpu_clock);
        bool waiting = cpu >= 0 && (cpu - p.seen_cpu) * 4 < wall && !runnable(p.tid);
        p.waiting.store(waiting, std::memory_order_relaxed);
        p.stuck_windows = waiting ? p.stuck_windows + 1 : 0;
        // Two windows in a row before the op is marked, so one unlucky window does not move it.
        if (p.stuck_windows >= 2) op->observed_blocking.store(true, std::memory_order_relaxed);
        p.seen_cpu = cpu;
        p.seen_wall = now;
      }
      if (p.waiting.load(std::memory_order_relaxed)) {
        ++stuck;
      } else {
        ++running;
      }
    }
    std::unique_lock lock(mutex_);
    // A core is idle while work waits: threads stuck in waiting ops, or owners parked on
    // their runs, hold no core. Two ticks in a row, so a worker that is just waking up is
    // not replaced.
    unsigned cores = std::max(1u, std::thread::hardware_concurrency());
    std::uint32_t wanted = stuck + parked_owners_.load(std::memory_order_relaxed);
    surplus_wanted_.store(wanted, std::memory_order_relaxed);
    bool starved = running < cores && searching_.load() == 0 && head_has_work();
    if (starved && starved_last_tick_) {
      if (sleepers_.load() > 0) {
        ++wake_tokens_;
        work_cv_.notify_one();
      } else if (surplus_.load(std::memory_order_relaxed) < std::min(wanted, kMaxSurplus)) {
        // One stand-in per thread that waits, and no more: a surplus worker beyond that would
        // leave again at once.
        surplus_.fetch_add(1, std::memory_order_relaxed);
        try {
          start_worker(true);
        } catch (...) {
          surplus_.fetch_sub(1, std::memory_order_relaxed);  // no thread to be had now
        }
      }
    }
    starved_last_tick_ = starved;
    if (now - last_busy > kMonitorQuietNs && head_ == nullptr) {
      monitor_asleep_ = true;
      monitor_cv_.wait(lock, [&] { return head_ != nullptr; });
      monitor_asleep_ = false;
      last_busy = now_ns();
    }
  }
}

void scheduler::run_blocking(std::function<void()> task) {
  std::unique_lock lock(lane_mutex_);
  lane_tasks_.push_back(std::move(task));
  // lane_idle_ counts threads waiting for a task plus threads started but not yet waiting.
  if (lane_tasks_.size() > lane_idle_ && lane_threads_ < kMaxLaneThreads) {
    ++lane_threads_;
    ++lane_idle_;
    std::thread([this] { lane_loop(); }).detach();
    threads_started_.fetch_add(1, std::memory_order_relaxed);
    return;
  }
  lock.unlock();
  lane_cv_.notify_one();
}

void scheduler::lane_loop() {
  t_on_lane = true;
  std::unique_lock lock(lane_mutex_);
  for (;;) {
    if (!lane_cv_.wait_for(lock, kLaneIdle, [&] { return !lane_tasks_.empty(); })) break;
    std::function<void()> task = std::move(lane_tasks_.front());
    lane_tasks_.pop_front();
    --lane_idle_;
    lock.unlock();
    task();
    task = nullptr;
    lock.lock();
    ++lane_idle_;
  }
  --lane_idle_;
  --lane_threads_;
}

bool scheduler::on_blocking_lane() noexcept { return t_on_lane; }

participant& scheduler::self() noexcept {
  if (t_participant.slot) return *t_participant.slot;
  for (participant& p : g_participants) {
    bool expected = false;
    if (!p.used.load(std::memory_order_relaxed) &&
        p.used.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
      p.seq.store(0, std::memory_order_relaxed);
      p.op.store(nullptr, std::memory_order_relaxed);
      if (pthread_getcpuclockid(pthread_self(), &p.cpu_clock) != 0) {
        p.cpu_clock = CLOCK_THREAD_CPUTIME_ID;
      }
      p.tid = static_cast<int>(gettid());
      p.generation.fetch_add(1, std::memory_order_relaxed);
      p.ready.store(true, std::memory_order_release);
      t_participant.slot = &p;
      return p;
    }
  }
  t_participant.slot = &g_overflow;
  return g_overflow;
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
  detail::scheduler::instance().resize(n);
}

unsigned thread_count() {
  if (auto* s = detail::scheduler::started()) return s->worker_count();
  std::lock_guard lock(detail::g_instance_mutex);
  return detail::g_requested_workers ? detail::g_requested_workers : detail::default_workers();
}

bool pool_started() noexcept { return detail::scheduler::started() != nullptr; }

}  // namespace xcs
