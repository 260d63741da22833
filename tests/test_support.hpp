// SPDX-License-Identifier: MIT
// Helpers shared by the xcs tests: timing, a concurrency meter, call counters, a deadlock
// watchdog and a fixture that reruns scheduler tests over several pool sizes.
#pragma once

#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace xcs_test {

using steady = std::chrono::steady_clock;

/// Milliseconds elapsed since `t0`.
inline double ms_since(steady::time_point t0) {
  return std::chrono::duration<double, std::milli>(steady::now() - t0).count();
}

/// Wall time of `fn()` in milliseconds.
template <class Fn>
double time_ms(Fn&& fn) {
  auto t0 = steady::now();
  fn();
  return ms_since(t0);
}

/// How long a test waits for something that should happen at once before it gives up and
/// fails (rather than hang): far beyond any sanitizer's or loaded machine's slowness.
inline steady::time_point give_up() { return steady::now() + std::chrono::seconds(10); }

/// Waits without using the CPU, like a network call.
inline void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

/// Keeps this thread's CPU busy for `ms` of wall time, like a CPU-bound function.
inline void spin_ms(int ms) {
  auto end = steady::now() + std::chrono::milliseconds(ms);
  std::atomic<std::uint64_t> sink{0};
  while (steady::now() < end) {
    for (int i = 0; i < 1000; ++i) sink.fetch_add(1, std::memory_order_relaxed);
  }
}

/// Counts the ops running at once, and the most seen.
class concurrency_meter {
 public:
  /// Marks one op as running for the guard's lifetime.
  class guard {
   public:
    explicit guard(concurrency_meter& m) : m_(m) {
      int now = m_.now_.fetch_add(1, std::memory_order_acq_rel) + 1;
      int seen = m_.max_.load(std::memory_order_relaxed);
      while (now > seen && !m_.max_.compare_exchange_weak(seen, now, std::memory_order_acq_rel)) {
      }
    }
    ~guard() { m_.now_.fetch_sub(1, std::memory_order_acq_rel); }
    guard(const guard&) = delete;
    guard& operator=(const guard&) = delete;

   private:
    concurrency_meter& m_;
  };

  /// Waits, sleeping as a blocking call would, until `n` guards were alive at once or until
  /// `give_up`. An op that calls it inside a guard makes its instances overlap whenever the
  /// scheduler lets `n` of them run at once, however slow the machine; a scheduler that does
  /// not leaves max() below `n` instead of hanging the test.
  void await_peak(int n, steady::time_point give_up) const {
    while (max() < n && steady::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
  }

  int max() const { return max_.load(std::memory_order_acquire); }
  int now() const { return now_.load(std::memory_order_acquire); }
  void reset() {
    now_.store(0);
    max_.store(0);
  }

 private:
  std::atomic<int> now_{0};
  std::atomic<int> max_{0};
};

/// Counts invocations, thread-safe.
class invocation_counter {
 public:
  void hit() { n_.fetch_add(1, std::memory_order_relaxed); }
  int count() const { return n_.load(std::memory_order_relaxed); }
  void reset() { n_.store(0); }

 private:
  std::atomic<int> n_{0};
};

/// Start times of ops, in milliseconds since the recorder was made or reset. Thread-safe.
class start_times {
 public:
  void record() {
    std::lock_guard lock(mutex_);
    starts_.push_back(ms_since(t0_));
  }
  std::vector<double> get() const {
    std::lock_guard lock(mutex_);
    return starts_;
  }
  void reset() {
    std::lock_guard lock(mutex_);
    starts_.clear();
    t0_ = steady::now();
  }

 private:
  mutable std::mutex mutex_;
  steady::time_point t0_ = steady::now();
  std::vector<double> starts_;
};

/// Ends the process with a message if the scope is not left within `limit`: a deadlock would
/// otherwise hang the test until ctest's timeout, with no hint of where.
class deadline {
 public:
  deadline(std::chrono::milliseconds limit, std::string what)
      : what_(std::move(what)), watchdog_([this, limit] {
          std::unique_lock lock(mutex_);
          if (!cv_.wait_for(lock, limit, [this] { return done_; })) {
            std::fprintf(stderr, "deadline exceeded (deadlock?): %s\n", what_.c_str());
            std::fflush(stderr);
            std::_Exit(3);
          }
        }) {}
  ~deadline() {
    {
      std::lock_guard lock(mutex_);
      done_ = true;
    }
    cv_.notify_one();
    watchdog_.join();
  }
  deadline(const deadline&) = delete;
  deadline& operator=(const deadline&) = delete;

 private:
  std::string what_;
  std::mutex mutex_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread watchdog_;
};

/// Threads of this process right now (Linux).
inline int process_threads() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

/// Threads of this process once the count has come down to `at_most` (threads that exit take
/// a moment to leave /proc, longer under TSan, and idle lane threads retire after 500 ms), or
/// the count after 3 s: a count that stays above it is a thread that did not go.
inline int process_threads_settled(int at_most) {
  const auto until = steady::now() + std::chrono::seconds(3);
  int n = process_threads();
  while (n > at_most && steady::now() < until) {
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
    n = process_threads();
  }
  return n;
}

/// Reruns a test with the pool at 1, 2 and 4 CPU workers (marl's WithBoundScheduler idea):
/// derive a suite from it and instantiate it with `XCS_TEST_POOL_SIZES(Suite)`.
class PoolSizeTest : public ::testing::TestWithParam<unsigned> {
 protected:
  void SetUp() override {
    saved_ = xcs::thread_count();
    xcs::set_thread_count(GetParam());
    ASSERT_EQ(xcs::thread_count(), GetParam());
  }
  void TearDown() override { xcs::set_thread_count(saved_); }

 private:
  unsigned saved_ = 1;
};

inline std::string pool_size_name(const ::testing::TestParamInfo<unsigned>& info) {
  return "Threads" + std::to_string(info.param);
}

}  // namespace xcs_test

#define XCS_TEST_POOL_SIZES(suite)                                          \
  INSTANTIATE_TEST_SUITE_P(PoolSizes, suite, ::testing::Values(1u, 2u, 4u), \
                           ::xcs_test::pool_size_name)
