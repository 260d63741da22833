// SPDX-License-Identifier: MIT
// The process-wide pool of CPU workers and the list of runs they help.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "monitor.hpp"

namespace xcs::detail {

class pool;
struct job_listing;

/// Work a run shares with the pool. The pool never owns a job; the job's owner calls
/// `pool::retract` before destroying it.
class job {
 public:
  virtual ~job() = default;
  /// True if some node is ready to start. Sequentially consistent (pairs with the sleep
  /// protocol in pool::sleep).
  virtual bool has_work() const noexcept = 0;
  /// Runs ready nodes until none is ready. Called by helpers, possibly several at once.
  virtual void help() noexcept = 0;

  /// Threads other than the owner and the pool's workers that may touch the job (the pool
  /// counts its workers in the job's listing). A helper's decrement (release) is its last
  /// access; retract() waits (acquire) for zero before the owner may free the job.
  std::atomic<std::uint32_t> helpers_inside{0};
  /// Waits (acquire) until no helper is inside: after it, the owner may free the job. Helpers
  /// may have been preempted inside, so it yields rather than spins hard.
  void wait_for_helpers() const noexcept {
    while (helpers_inside.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }

 private:
  friend class pool;
  enum class listed : std::uint8_t { no, being_listed, yes };
  /// Acquire/release: `yes` publishes listing_ and listed_in_, which the thread that moved
  /// it to `being_listed` wrote.
  std::atomic<listed> listed_{listed::no};
  job_listing* listing_ = nullptr;
  const pool* listed_in_ = nullptr;  // a pool forgotten after fork() is not the current one
};

/// CPU workers that help runs, plus stand-in workers the monitor adds while threads wait in
/// ops. Thread-safe.
class pool final : private monitor_client {
 public:
  /// The pool, started on first use (throws if it cannot be allocated). Never destroyed: its
  /// threads sleep on its own state, so a process may exit at any time.
  static pool& instance();
  /// The pool if it was started, else null. Lets a process that never needed it stay at one
  /// thread.
  static pool* started() noexcept;

  /// CPU workers whose threads started (the calling threads take part too).
  unsigned worker_count() const noexcept;
  /// Replaces the CPU workers with `n` new ones. Waits for the current ones to finish what
  /// they run. Throws xcs::error for 0 or from a worker. Starts as many as it can; fewer
  /// than `n` shows in degradation().
  void resize(unsigned n);
  /// Empty when the pool runs as configured, else one sentence saying what it lacks.
  std::string degradation() const;

  /// Makes `j` visible to workers (idempotent; a concurrent call returns once `j` is visible).
  /// Takes no lock unless every listing is in use. Throws std::bad_alloc or std::length_error
  /// if no listing can be added: the owner then runs `j` alone.
  void offer(job& j);
  /// Removes `j` and waits until no helper is inside it: no worker of the pool, and
  /// helpers_inside is zero.
  void retract(job& j) noexcept;
  /// Wakes one sleeping worker if none is already looking for work.
  void wake() noexcept;
  /// True on a stand-in worker that should stop taking nodes (fewer threads wait than there
  /// are stand-ins). Cheap on other threads: one thread-local read.
  static bool stand_in_should_leave() noexcept;

  /// In a child after fork(): forget the parent's pool (its threads do not exist here).
  static void forget_after_fork() noexcept;

 private:
  struct worker;
  struct listing_block;
  /// In a child after fork(): the forking thread is no longer a stand-in.
  static void forget_thread_after_fork() noexcept;
  enum class next_step { run, retry, leave };

  pool();
  void start_workers(unsigned n);  // with mutex_ held
  void start_worker(bool stand_in);
  void worker_body(worker* w);
  void worker_loop(worker* w);
  next_step find_job(worker& w, int& spins, job_listing*& at, job*& j);
  next_step sleep(worker& w, job_listing*& at, job*& j);
  void run_job(job_listing& at, job& j) noexcept;
  void resume_fibers();
  void fiber_ready() noexcept;
  job_listing& listing(std::uint32_t i) const noexcept;
  /// Claims a free listing for an offer (adds one if none is free).
  job_listing& claim_listing();
  /// A job with work, reserved in its listing (the caller's end of the reservation is its
  /// last touch of the job), or null. Starts after the listing `w` took a job from last, so that
  /// concurrent runs share the workers fairly.
  job* take_job(worker& w, job_listing*& at) noexcept;
  bool any_job_has_work() const noexcept;
  bool retire_stand_in() noexcept;
  bool idle_workers() const noexcept;

  // monitor_client
  void balance(std::uint32_t running, std::uint32_t wanted, unsigned cores) noexcept override;
  bool has_jobs() noexcept override;

  static constexpr std::uint32_t kListingsPerBlock = 64;
  static constexpr std::uint32_t kMaxListingBlocks = 256;

  // The offered jobs: a table of listings that workers scan without a lock (see job_listing
  // in pool.cpp). Blocks are added, never removed, so a listing's address stays valid.
  std::atomic<listing_block*> listing_blocks_[kMaxListingBlocks]{};
  /// Listings below this index may be in use; blocks below it exist. Read by every worker's
  /// look, written only when a listing is added: a cache line apart from the counters that
  /// change at every run. Seq-cst: a sleeper's read pairs with an offer that added a listing
  /// (see sleep()); the raise also publishes the block (release).
  alignas(64) std::atomic<std::uint32_t> listings_high_{0};
  std::mutex grow_mutex_;  // serializes adding listings; never taken by workers

  /// Guards workers_, requested_, wake_tokens_ and the sleepers' wait. Workers take it only
  /// to sleep, never to find a job.
  alignas(64) mutable std::mutex mutex_;
  std::condition_variable work_cv_;
  std::uint32_t wake_tokens_ = 0;
  /// Base workers whose threads started; stand-ins are detached and not listed.
  std::vector<worker*> workers_;
  unsigned requested_ = 0;
  bool monitor_started_ = false;    // set once in the constructor
  bool starved_last_tick_ = false;  // monitor thread only

  // Seq-cst: these pair with job::has_work() in the sleep protocol (see sleep()).
  std::atomic<std::uint32_t> sleepers_{0};
  std::atomic<std::uint32_t> searching_{0};
  /// Stand-in workers alive and not retiring. Relaxed: compared with stand_ins_wanted().
  std::atomic<std::uint32_t> stand_ins_{0};
};

}  // namespace xcs::detail
