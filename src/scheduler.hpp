// SPDX-License-Identifier: MIT
// The process-wide pool: workers that help runs, a blocking lane, and a monitor that notices
// threads stuck in ops that do not use the CPU.
#pragma once

#include <time.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include "clock.hpp"
#include "xcs/detail/op_profile.hpp"

namespace xcs::detail {

class scheduler;

/// Work a run shares with the pool. The scheduler never owns a job; the job's owner calls
/// `scheduler::retract` before destroying it.
class job {
 public:
  virtual ~job() = default;
  /// True if some node is ready to start. Sequentially consistent (pairs with the sleep
  /// protocol in scheduler::worker_loop).
  virtual bool has_work() const noexcept = 0;
  /// Runs ready nodes until none is ready. Called by helpers, possibly several at once.
  virtual void help() noexcept = 0;

  /// Threads other than the owner that may touch the job. A helper's decrement (release) is
  /// its last access; retract() waits (acquire) for zero before the owner may free the job.
  std::atomic<std::uint32_t> helpers{0};

 private:
  friend class scheduler;
  job* prev_ = nullptr;  // guarded by scheduler::mutex_
  job* next_ = nullptr;
  bool listed_ = false;
};

/// What a participating thread (a worker or a caller running nodes) is doing, published for
/// the monitor. Written only by its thread, with relaxed stores; the monitor reads it with
/// relaxed loads, since a stale read only delays a decision by one tick.
struct participant {
  /// Claimed by a thread (compare-exchange), then `ready` once cpu_clock and tid are set.
  std::atomic<bool> used{false};
  /// Release by the claiming thread after it filled in cpu_clock and tid; the monitor reads
  /// those only after an acquire load of true. Cleared when the thread ends.
  std::atomic<bool> ready{false};
  /// Bumped each time a new thread takes the slot, so the monitor resets its own fields.
  std::atomic<std::uint32_t> generation{0};
  std::atomic<std::uint64_t> seq{0};              // bumped when a node starts
  std::atomic<op_profile*> op{nullptr};  // the op running now, or null
  clockid_t cpu_clock{};
  int tid = 0;
  // Monitor-private.
  std::uint32_t seen_generation = 0;
  int stuck_windows = 0;  // consecutive windows classified as waiting
  /// The monitor classified the node running now as waiting. Written by the monitor, cleared
  /// by the thread when the node returns (relaxed: a hint for how many surplus workers to keep).
  std::atomic<bool> waiting{false};
  std::uint64_t seen_seq = ~std::uint64_t{0};
  std::int64_t seen_cpu = 0;
  std::int64_t seen_wall = 0;
};

class scheduler {
 public:
  /// The pool, started on first use. Never destroyed: its threads sleep on its own state, so
  /// a process may exit (return from main or std::exit) at any time.
  static scheduler& instance();
  /// The pool if it was started, else null. Lets a process that never needed it stay at one
  /// thread.
  static scheduler* started() noexcept;

  /// Number of CPU workers (the calling threads take part too).
  unsigned worker_count() const noexcept;
  /// Replaces the CPU workers with `n` new ones. Waits for the current ones to finish what
  /// they run. Must not be called from a worker.
  void resize(unsigned n);

  /// Makes `j` visible to workers (idempotent).
  void offer(job& j);
  /// Removes `j` and waits until no helper is inside it.
  void retract(job& j) noexcept;
  /// A suspended fiber became ready on some worker: wake it if it sleeps.
  void fiber_ready() noexcept;
  /// Wakes one sleeping worker if none is already looking for work.
  void wake() noexcept;
  /// True if some worker sleeps and none is looking for work: waking one would help.
  bool idle_workers() const noexcept {
    return searching_.load(std::memory_order_seq_cst) == 0 &&
           sleepers_.load(std::memory_order_seq_cst) > 0;
  }

  /// Runs `task` on the blocking lane: threads beyond the CPU workers, made as needed, for
  /// ops that wait rather than compute.
  void run_blocking(std::function<void()> task);
  /// Owners parked waiting for their runs (they hold no core). Relaxed: a monitor hint.
  std::atomic<std::uint32_t> parked_owners_{0};

  /// Called by a thread whose node the monitor saw waiting, when the node returns: one
  /// surplus worker fewer is needed, now rather than at the monitor's next tick.
  void unstuck() noexcept;
  /// True on a surplus worker that should stop taking nodes (fewer threads wait than there
  /// are surplus workers). Cheap on other threads: one thread-local read.
  static bool surplus_should_leave() noexcept;

  /// True on a blocking-lane thread.
  static bool on_blocking_lane() noexcept;

  /// This thread's participant slot, claimed on first use.
  static participant& self() noexcept;

  /// Total threads made so far (for tests and stats).
  std::uint64_t threads_started() const noexcept { return threads_started_.load(); }

 private:
  scheduler();
  struct worker;

  void start_worker(bool surplus);
  void worker_loop(worker* w);
  job* take_job();  // with mutex_ held; counts the caller as a helper of the result
  bool head_has_work() const noexcept;  // with mutex_ held
  bool retire_surplus() noexcept;
  void monitor_loop();
  void lane_loop();

  mutable std::mutex mutex_;  // guards the job list, workers_, wake_tokens_, monitor state
  std::condition_variable work_cv_;
  job* head_ = nullptr;
  job* tail_ = nullptr;
  std::uint32_t wake_tokens_ = 0;
  std::vector<worker*> workers_;  // base workers; surplus ones are detached
  unsigned base_count_ = 0;

  // Seq-cst: these pair with job::has_work() in the sleep protocol (see worker_loop).
  std::atomic<std::uint32_t> sleepers_{0};
  std::atomic<std::uint32_t> searching_{0};
  std::atomic<std::uint32_t> surplus_{0};
  /// Surplus workers the monitor still wants: one per thread it sees waiting in an op or
  /// parked. Relaxed: a stale value only delays a surplus worker's exit by one job.
  std::atomic<std::uint32_t> surplus_wanted_{0};

  std::condition_variable monitor_cv_;
  bool monitor_asleep_ = false;
  bool starved_last_tick_ = false;  // monitor thread only

  std::mutex lane_mutex_;  // guards lane_tasks_, lane_idle_, lane_threads_
  std::condition_variable lane_cv_;
  std::deque<std::function<void()>> lane_tasks_;
  std::uint32_t lane_idle_ = 0;
  std::uint32_t lane_threads_ = 0;

  std::atomic<std::uint64_t> threads_started_{0};
};

/// CPU time of the calling thread in nanoseconds.
std::int64_t thread_cpu_ns() noexcept;

}  // namespace xcs::detail
