// SPDX-License-Identifier: MIT
// The CPU workers: finding work, the sleep protocol, resuming fibers, and stand-in workers.
#include "pool.hpp"

#include <algorithm>
#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>

#include "fiber.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {
namespace {

/// Stand-in workers (added while others wait in ops) leave after this long idle.
constexpr auto kStandInIdle = std::chrono::milliseconds(100);
constexpr std::uint32_t kMaxStandIns = 256;
/// Rounds a worker looks for work (yielding between them) before it sleeps.
constexpr int kSpinRounds = 64;

// A job_listing's state: kOpen or kClosing (or neither) plus the workers that reserved it.
constexpr std::uint32_t kOpen = 1u << 31;     // listed: workers may reserve it
constexpr std::uint32_t kClosing = 1u << 30;  // retract() waits for the reservations to end
constexpr std::uint32_t kClaimed = 1u << 29;  // an offer fills it in

thread_local bool t_stand_in = false;

}  // namespace

/// An offered job's place in the pool's table. Workers find jobs without a lock: a worker
/// reserves the listing (counts itself in `state`, which only an open listing allows) before
/// it touches the job and ends the reservation after its last touch, so retract() only closes
/// the listing and waits for the count to drain. A worker that reserved a listing reads
/// `offered` only then, so a listing freed and claimed by another offer between the worker's
/// load and its reservation hands it the new job, never a freed one.
struct alignas(64) job_listing {  // a cache line each: every worker's reservation writes here
  /// 0 when free; kClaimed while an offer fills it in; kOpen + reservations while listed;
  /// kClosing + reservations while retract() waits. Seq-cst loads and reservations: an open
  /// listing is work a sleeper must see (see pool::sleep). A reservation ends with a release
  /// decrement, the worker's last touch of the job; retract() waits for zero (acquire) and
  /// frees the listing (release), which the next claim acquires.
  std::atomic<std::uint32_t> state{0};
  /// Written while claimed, published by the opening store; read only by a worker that holds
  /// a reservation.
  job* offered = nullptr;
};

struct pool::listing_block {
  job_listing at[kListingsPerBlock];
};

namespace {

/// Counts the caller in `l` if it is open. The caller may then touch `l.offered` until it
/// calls end_reservation().
bool reserve(job_listing& l) noexcept {
  std::uint32_t s = l.state.load(std::memory_order_seq_cst);
  while (s & kOpen) {
    if (l.state.compare_exchange_weak(s, s + 1, std::memory_order_seq_cst)) return true;
  }
  return false;
}

void end_reservation(job_listing& l) noexcept {
  l.state.fetch_sub(1, std::memory_order_release);  // the caller's last touch of the job
}

}  // namespace

struct pool::worker {
  std::thread thread;
  /// Written under pool::mutex_. Relaxed: the sleepers' wait reads it under the lock; a
  /// worker that looks for work misses it at most until its next round.
  std::atomic<bool> stop{false};
  bool stand_in = false;
  bool retired = false;            // a stand-in that already took itself off stand_ins_
  std::uint32_t next_listing = 0;  // where its next look for a job starts (its thread only)
  /// Its thread's fibers (base workers; only that thread touches it). Held here, reachable
  /// from the pool, rather than on the thread's own stack, which LeakSanitizer does not scan
  /// while the thread runs on a fiber.
  std::unique_ptr<fiber_worker> fibers;
};

void pool::start_worker(bool stand_in) {
  auto w = std::make_unique<worker>();
  w->stand_in = stand_in;
  worker* raw = w.get();
  if (stand_in) {
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
      w->stop.store(true, std::memory_order_relaxed);
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

job_listing& pool::listing(std::uint32_t i) const noexcept {
  // Acquire: pairs with the release that published the block in claim_listing().
  listing_block* b = listing_blocks_[i / kListingsPerBlock].load(std::memory_order_acquire);
  return b->at[i % kListingsPerBlock];
}

job_listing& pool::claim_listing() {
  for (;;) {
    std::uint32_t high = listings_high_.load(std::memory_order_acquire);
    for (std::uint32_t i = 0; i < high; ++i) {
      job_listing& l = listing(i);
      std::uint32_t free = 0;
      // Acquire: the listing was freed (release) after its last reservation ended.
      if (l.state.load(std::memory_order_relaxed) == 0 &&
          l.state.compare_exchange_strong(free, kClaimed, std::memory_order_acquire,
                                          std::memory_order_relaxed)) {
        return l;
      }
    }
    // All in use: add one. Rare (only more runs offered at once than ever before), so a lock.
    std::lock_guard lock(grow_mutex_);
    if (listings_high_.load(std::memory_order_relaxed) != high) continue;  // one was added
    std::uint32_t b = high / kListingsPerBlock;
    if (b == kMaxListingBlocks) throw std::length_error("xcs: too many runs offered at once");
    if (high % kListingsPerBlock == 0) {
      listing_blocks_[b].store(new listing_block, std::memory_order_release);  // never freed
    }
    job_listing& l = listing(high);
    l.state.store(kClaimed, std::memory_order_relaxed);  // no other thread sees it yet
    // Seq-cst: a sleeper that reads the old value was counted before this (see sleep()).
    listings_high_.store(high + 1, std::memory_order_seq_cst);
    return l;
  }
}

void pool::offer(job& j) {
  job::listed was = j.listed_.load(std::memory_order_acquire);
  for (;;) {
    if (was == job::listed::yes && j.listed_in_ == this) return;
    if (was == job::listed::being_listed) {
      // Another thread lists it: return once workers can see it, as after listing it here.
      std::this_thread::yield();
      was = j.listed_.load(std::memory_order_acquire);
      continue;
    }
    // Not listed, or listed in a pool forgotten after fork().
    if (j.listed_.compare_exchange_weak(was, job::listed::being_listed,
                                        std::memory_order_acquire)) {
      break;
    }
  }
  job_listing* at = nullptr;
  try {
    at = &claim_listing();
  } catch (...) {
    j.listed_.store(was, std::memory_order_relaxed);
    throw;
  }
  at->offered = &j;
  j.listing_ = at;
  j.listed_in_ = this;
  // Seq-cst: an open listing is work a sleeper must see (see sleep()), and a run the monitor
  // must see before wake_monitor() reads its asleep flag (see has_jobs()). Also publishes
  // `offered` and the job to the workers that reserve it.
  at->state.store(kOpen, std::memory_order_seq_cst);
  j.listed_.store(job::listed::yes, std::memory_order_release);
  wake_monitor();
}

void pool::retract(job& j) noexcept {
  job::listed was = j.listed_.load(std::memory_order_acquire);
  while (was == job::listed::being_listed) {
    std::this_thread::yield();
    was = j.listed_.load(std::memory_order_acquire);
  }
  if (was == job::listed::yes) {
    // In a pool forgotten after fork() the listing has no workers: only forget it.
    if (j.listed_in_ == this) {
      job_listing& at = *j.listing_;
      // Closed, no worker reserves it again. Those that did leave after their last touch of
      // the job; they may have been preempted, so yield rather than spin hard.
      at.state.fetch_xor(kOpen | kClosing, std::memory_order_acq_rel);
      while (at.state.load(std::memory_order_acquire) != kClosing) std::this_thread::yield();
      at.state.store(0, std::memory_order_release);  // free for the next claim
    }
    // Release: a later offer from another thread rewrites listing_ and listed_in_.
    j.listed_.store(job::listed::no, std::memory_order_release);
  }
  // Helpers outside the pool (the blocking lane, completions, slot grants) count here. Read
  // only after the listing drained: a worker's relaxed increment (a node it parked, a turn it
  // gave the lane) comes before its end of reservation, which the wait above acquired.
  j.wait_for_helpers();
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

job* pool::take_job(worker& w, job_listing*& at) noexcept {
  const std::uint32_t high = listings_high_.load(std::memory_order_seq_cst);
  if (high == 0) return nullptr;
  std::uint32_t i = w.next_listing % high;
  for (std::uint32_t k = 0; k < high; ++k, i = i + 1 == high ? 0 : i + 1) {
    job_listing& l = listing(i);
    if (!reserve(l)) continue;
    job* j = l.offered;
    if (j->has_work()) {
      w.next_listing = i + 1;
      at = &l;
      return j;
    }
    end_reservation(l);
  }
  return nullptr;
}

bool pool::any_job_has_work() const noexcept {
  const std::uint32_t high = listings_high_.load(std::memory_order_seq_cst);
  for (std::uint32_t i = 0; i < high; ++i) {
    job_listing& l = listing(i);
    if (!reserve(l)) continue;
    bool work = l.offered->has_work();
    end_reservation(l);
    if (work) return true;
  }
  return false;
}

// A worker is counted in searching_ while it looks for work (not while it runs a job or
// sleeps), and in sleepers_ while it sleeps; wake() and the monitor read both.
void pool::worker_loop(worker* w) {
  t_stand_in = w->stand_in;
  searching_.fetch_add(1, std::memory_order_seq_cst);
  int spins = 0;
  for (;;) {
    if (w->stand_in && retire_stand_in()) {
      w->retired = true;
      break;
    }
    fiber_worker* fibers = fiber_worker::current();
    if (fibers && fibers->has_ready()) {
      resume_fibers();
      spins = 0;
      continue;
    }
    job_listing* at = nullptr;
    job* j = nullptr;
    next_step step = find_job(*w, spins, at, j);
    if (step == next_step::leave) break;
    if (step == next_step::run) {
      run_job(*at, *j);
      spins = 0;
    }
  }
  searching_.fetch_sub(1, std::memory_order_seq_cst);
  if (w->stand_in) {
    if (!w->retired) stand_ins_.fetch_sub(1, std::memory_order_relaxed);
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

pool::next_step pool::find_job(worker& w, int& spins, job_listing*& at, job*& j) {
  fiber_worker* fibers = fiber_worker::current();
  if (w.stop.load(std::memory_order_relaxed) && (!fibers || fibers->idle())) {
    if (fibers && !fibers->on_main()) {
      // Only the thread's own stack may end the thread: hand this loop's count over to it.
      searching_.fetch_sub(1, std::memory_order_seq_cst);
      fibers->return_to_main();
    }
    return next_step::leave;
  }
  j = take_job(w, at);
  if (j) return next_step::run;
  if (++spins < kSpinRounds) {
    std::this_thread::yield();
    return next_step::retry;
  }
  spins = 0;
  return sleep(w, at, j);
}

pool::next_step pool::sleep(worker& w, job_listing*& at, job*& j) {
  std::unique_lock lock(mutex_);
  // Sleep protocol: count ourselves as a sleeper (seq_cst), then look once more. A thread
  // that publishes work (seq_cst: a job's has_work(), or an offer's new or opened listing)
  // and then reads sleepers_ (seq_cst, in wake()) either sees us and wakes us, or we see its
  // work here (take_job reads listings_high_, the listings and has_work() seq_cst).
  searching_.fetch_sub(1, std::memory_order_seq_cst);
  sleepers_.fetch_add(1, std::memory_order_seq_cst);
  j = take_job(w, at);
  next_step step = next_step::run;
  if (!j) {
    fiber_worker* fibers = fiber_worker::current();
    auto ready = [&] {
      return wake_tokens_ > 0 || w.stop.load(std::memory_order_relaxed) || any_job_has_work() ||
             (fibers && fibers->has_ready());
    };
    bool woken = true;
    if (w.stand_in) {
      woken = work_cv_.wait_for(lock, kStandInIdle, ready);
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

void pool::run_job(job_listing& at, job& j) noexcept {
  // Found work: if more is waiting, let another sleeper look too (a wake chain).
  searching_.fetch_sub(1, std::memory_order_seq_cst);
  if (j.has_work()) wake();
  j.help();
  end_reservation(at);
  searching_.fetch_add(1, std::memory_order_seq_cst);
}

bool pool::stand_in_should_leave() noexcept {
  if (!t_stand_in) return false;
  pool* p = started();
  return p && p->stand_ins_.load(std::memory_order_relaxed) > stand_ins_wanted();
}

bool pool::retire_stand_in() noexcept {
  // More stand-ins than threads waiting: this one leaves, so CPU work does not run on more
  // threads than there are cores once the waiting is over.
  std::uint32_t n = stand_ins_.load(std::memory_order_relaxed);
  while (n > stand_ins_wanted()) {
    if (stand_ins_.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) return true;
  }
  return false;
}

void pool::balance(std::uint32_t running, std::uint32_t wanted, unsigned cores) noexcept {
  std::lock_guard lock(mutex_);
  // A core is idle while work waits: threads waiting in ops, or owners parked on their runs,
  // hold no core. Two ticks in a row, so a worker that is just waking up is not replaced.
  bool starved = running < cores && searching_.load() == 0 && any_job_has_work();
  if (starved && starved_last_tick_) {
    if (sleepers_.load() > 0) {
      ++wake_tokens_;
      work_cv_.notify_one();
    } else if (stand_ins_.load(std::memory_order_relaxed) < std::min(wanted, kMaxStandIns)) {
      // One stand-in per thread that waits, and no more: one beyond that would leave at once.
      stand_ins_.fetch_add(1, std::memory_order_relaxed);
      try {
        start_worker(true);
      } catch (...) {
        stand_ins_.fetch_sub(1, std::memory_order_relaxed);  // no thread to be had now
      }
    }
  }
  starved_last_tick_ = starved;
}

bool pool::has_jobs() noexcept {
  // Seq-cst loads: the monitor set its asleep flag (seq_cst) before this, and an offer opens
  // its listing (seq_cst) before wake_monitor() reads the flag, so one sees the other. Rare
  // (the monitor asks only before it sleeps), so a scan rather than a count every run bumps.
  const std::uint32_t high = listings_high_.load(std::memory_order_seq_cst);
  for (std::uint32_t i = 0; i < high; ++i) {
    if (listing(i).state.load(std::memory_order_seq_cst) & kOpen) return true;
  }
  return false;
}

void pool::forget_thread_after_fork() noexcept { t_stand_in = false; }

}  // namespace xcs::detail
