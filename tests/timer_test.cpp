// SPDX-License-Identifier: MIT
// The timer thread: timers run once, in time order, near their time; cancel stops them or waits
// for them; one thread serves the process, and a child after fork() gets its own.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "timer.hpp"

namespace {

using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using xcs::detail::add_timer;
using xcs::detail::cancel_timer;
using xcs::detail::steady_time;

/// What the test's callbacks record: which arg ran, in which order, and when.
struct recorder {
  std::mutex mutex;
  std::vector<std::uint64_t> args;
  std::vector<steady_time> at;
  std::atomic<int> count{0};

  static void record(void* context, std::uint64_t arg) noexcept {
    auto& r = *static_cast<recorder*>(context);
    steady_time now = steady::now();
    {
      std::lock_guard lock(r.mutex);
      r.args.push_back(arg);
      r.at.push_back(now);
    }
    r.count.fetch_add(1, std::memory_order_release);
  }

  /// Waits until `n` callbacks ran; false if they did not within the test's patience.
  bool await(int n) const {
    auto give_up = xcs_test::give_up();
    while (count.load(std::memory_order_acquire) < n) {
      if (steady::now() > give_up) return false;
      std::this_thread::sleep_for(200us);
    }
    return true;
  }
};

/// Due first: holds the timer thread until opened, so that every timer is added before any
/// later one runs (adding may take long: the first add starts the thread, sanitizers are slow)
/// and the order of the runs can be checked.
struct gate {
  std::atomic<bool> open{false};
  static void hold(void* context, std::uint64_t) noexcept {
    auto& g = *static_cast<gate*>(context);
    auto give_up = xcs_test::give_up();
    while (!g.open.load() && steady::now() < give_up) std::this_thread::sleep_for(100us);
  }
};

TEST(TimerTest, FiresInTimeOrder) {
  recorder r;
  gate g;
  const steady_time t0 = steady::now() + 1ms;
  add_timer(t0, &gate::hold, &g, 0);
  // Added out of order; two are due at once and run in the order they were added.
  const int delays_ms[] = {30, 10, 25, 0, 15, 15, 5};
  for (std::uint64_t i = 0; i < std::size(delays_ms); ++i) {
    std::uint64_t id =
        add_timer(t0 + std::chrono::milliseconds(delays_ms[i]), &recorder::record, &r, i);
    EXPECT_NE(id, 0u);
  }
  g.open.store(true);
  ASSERT_TRUE(r.await(std::size(delays_ms)));
  std::lock_guard lock(r.mutex);
  EXPECT_EQ(r.args, (std::vector<std::uint64_t>{3, 6, 1, 4, 5, 2, 0}));
}

TEST(TimerTest, FiresNearItsTime) {
  // One at a time, so that each is the first timer and wakes the thread from its sleep: the
  // lateness measured is the thread's, not a queue's.
  recorder r;
  std::vector<std::chrono::nanoseconds> late;
  for (int i = 0; i < 20; ++i) {
    const steady_time when = steady::now() + 3ms;
    add_timer(when, &recorder::record, &r, 0);
    ASSERT_TRUE(r.await(i + 1));
    std::lock_guard lock(r.mutex);
    late.push_back(r.at.back() - when);
  }
  std::sort(late.begin(), late.end());
  for (auto l : late) EXPECT_GE(l.count(), 0) << "a timer ran before its time";
    // Typically 50-100 us (a wake-up on a virtual machine); the bound is for a loaded two-core
    // machine, and sanitizers slow every step.
#if defined(XCS_SANITIZE_THREAD) || defined(XCS_SANITIZE_ADDRESS)
  EXPECT_LT(late.back(), 100ms) << "worst lateness";
#else
  EXPECT_LT(late.back(), 20ms) << "worst lateness";
#endif
  EXPECT_LT(late[late.size() / 2], 5ms) << "median lateness";
  std::printf("timer lateness: median %.1f us, worst %.1f us\n",
              static_cast<double>(late[late.size() / 2].count()) / 1e3,
              static_cast<double>(late.back().count()) / 1e3);
}

TEST(TimerTest, CancelBeforeFiringPreventsIt) {
  recorder r;
  const steady_time t0 = steady::now();
  // Far enough ahead that the cancel comes first on a loaded machine under TSan (it once came
  // after 10 ms there), near enough to keep the test quick.
  std::uint64_t doomed = add_timer(t0 + 300ms, &recorder::record, &r, 1);
  std::uint64_t sentinel = add_timer(t0 + 320ms, &recorder::record, &r, 2);
  EXPECT_TRUE(cancel_timer(doomed));
  EXPECT_FALSE(cancel_timer(doomed)) << "a second cancel of the same id";
  // Timers run in time order: once the later one ran, the cancelled one would have too.
  ASSERT_TRUE(r.await(1));
  std::this_thread::sleep_for(5ms);
  std::lock_guard lock(r.mutex);
  EXPECT_EQ(r.args, std::vector<std::uint64_t>{2});
  EXPECT_FALSE(cancel_timer(sentinel)) << "an id that already ran";
  EXPECT_FALSE(cancel_timer(0));
  EXPECT_FALSE(cancel_timer(~std::uint64_t{0})) << "an unknown id";
}

struct slow_callback {
  std::atomic<bool> started{false};
  std::atomic<bool> finished{false};

  static void run(void* context, std::uint64_t) noexcept {
    auto& s = *static_cast<slow_callback*>(context);
    s.started.store(true);
    std::this_thread::sleep_for(50ms);
    s.finished.store(true);
  }
};

TEST(TimerTest, CancelOfRunningCallbackWaitsForIt) {
  slow_callback s;
  std::uint64_t id = add_timer(steady::now(), &slow_callback::run, &s, 0);
  auto give_up = xcs_test::give_up();
  while (!s.started.load() && steady::now() < give_up) std::this_thread::yield();
  ASSERT_TRUE(s.started.load());
  auto t0 = steady::now();
  EXPECT_FALSE(cancel_timer(id)) << "it had started";
  EXPECT_TRUE(s.finished.load()) << "cancel_timer returned while the callback ran";
  EXPECT_GT(xcs_test::ms_since(t0), 10.0);
}

struct self_cancel {
  std::uint64_t own = 0;
  std::uint64_t other = 0;
  std::atomic<int> own_result{-1};
  std::atomic<int> other_result{-1};

  static void run(void* context, std::uint64_t) noexcept {
    auto& s = *static_cast<self_cancel*>(context);
    s.own_result.store(cancel_timer(s.own) ? 1 : 0);
    s.other_result.store(cancel_timer(s.other) ? 1 : 0);
  }
};

TEST(TimerTest, CancelFromInsideCallbackDoesNotDeadlock) {
  xcs_test::deadline guard(10s, "TimerTest: cancel_timer inside a callback");
  recorder r;
  self_cancel s;
  const steady_time t0 = steady::now();
  // Both ids are set before the first can run (1 ms is plenty: nothing else is added).
  s.own = add_timer(t0 + 20ms, &self_cancel::run, &s, 0);
  s.other = add_timer(t0 + 40ms, &recorder::record, &r, 0);
  std::uint64_t sentinel = add_timer(t0 + 60ms, &recorder::record, &r, 1);
  ASSERT_NE(sentinel, 0u);
  ASSERT_TRUE(r.await(1));
  EXPECT_EQ(s.own_result.load(), 0) << "its own timer is running, not pending";
  EXPECT_EQ(s.other_result.load(), 1) << "a pending timer, cancelled from a callback";
  std::lock_guard lock(r.mutex);
  EXPECT_EQ(r.args, std::vector<std::uint64_t>{1});
}

struct counted {
  std::vector<std::atomic<int>> runs;
  std::vector<steady_time> due;
  std::atomic<int> total{0};
  std::mutex mutex;
  std::vector<steady_time> order;  // the due time of each as it ran
  explicit counted(std::size_t n) : runs(n), due(n) {}

  static void run(void* context, std::uint64_t i) noexcept {
    auto& c = *static_cast<counted*>(context);
    {
      std::lock_guard lock(c.mutex);
      c.order.push_back(c.due[i]);
    }
    if (steady::now() < c.due[i]) c.runs[i].fetch_add(1000);  // early: counted as wrong
    c.runs[i].fetch_add(1);
    c.total.fetch_add(1, std::memory_order_release);
  }
};

TEST(TimerTest, ManyTimersFireExactlyOnce) {
  constexpr std::size_t kTimers = 10'000;
  counted c(kTimers);
  std::mt19937 rng(42);
  std::uniform_int_distribution<int> spread_us(0, 20'000);
  const steady_time t0 = steady::now() + 1ms;
  gate g;
  add_timer(t0, &gate::hold, &g, 0);
  for (std::size_t i = 0; i < kTimers; ++i) {
    c.due[i] = t0 + std::chrono::microseconds(spread_us(rng));
  }
  // Added from four threads at once.
  std::vector<std::uint64_t> ids(kTimers);
  std::vector<std::thread> adders;
  for (std::size_t t = 0; t < 4; ++t) {
    adders.emplace_back([&, t] {
      for (std::size_t i = t; i < kTimers; i += 4) {
        ids[i] = add_timer(c.due[i], &counted::run, &c, i);
      }
    });
  }
  for (auto& a : adders) a.join();
  // Every third is cancelled before it could run.
  int expected = 0;
  for (std::size_t i = 0; i < kTimers; ++i) {
    if (i % 3 == 0) {
      EXPECT_TRUE(cancel_timer(ids[i])) << "timer " << i;
    } else {
      ++expected;
    }
  }
  g.open.store(true);
  auto give_up = xcs_test::give_up();
  while (c.total.load(std::memory_order_acquire) < expected && steady::now() < give_up) {
    std::this_thread::sleep_for(1ms);
  }
  // Time for a stray second run, or a cancelled one, to show.
  std::this_thread::sleep_for(20ms);
  EXPECT_EQ(c.total.load(), expected);
  int wrong = 0;
  for (std::size_t i = 0; i < kTimers; ++i) {
    int want = i % 3 == 0 ? 0 : 1;
    if (c.runs[i].load() != want && ++wrong <= 5) {
      ADD_FAILURE() << "timer " << i << " ran " << c.runs[i].load() << " times (1000s: early)";
    }
  }
  EXPECT_EQ(wrong, 0);
  std::lock_guard lock(c.mutex);
  EXPECT_TRUE(std::is_sorted(c.order.begin(), c.order.end())) << "not run in time order";
}

TEST(TimerTest, OneThreadOnly) {
  // A first thread, so that what a runtime starts with it (TSan's background thread) is
  // counted before.
  std::thread([] {}).join();
  const int before = xcs_test::process_threads();
  const bool started = xcs::detail::timer_thread_started();
  recorder r;
  int n = 0;
  for (int round = 0; round < 3; ++round) {
    std::vector<std::thread> adders;
    for (int t = 0; t < 4; ++t) {
      adders.emplace_back([&] {
        for (int i = 0; i < 50; ++i) add_timer(steady::now() + 1ms, &recorder::record, &r, 0);
      });
    }
    for (auto& a : adders) a.join();
    n += 200;
    ASSERT_TRUE(r.await(n));
    EXPECT_TRUE(xcs::detail::timer_thread_started());
    // Once the adders' threads have left /proc: the timer thread is the only one added.
    const int expected = before + (started ? 0 : 1);
    EXPECT_EQ(xcs_test::process_threads_settled(expected), expected) << "round " << round;
  }
}

/// Exit codes of the forked child.
enum child_status : int {
  child_ok = 0,
  parent_thread_seen = 30,
  did_not_fire = 31,
  fired_early = 32,
};

struct child_flag {
  std::atomic<bool> fired{false};
  static void run(void* context, std::uint64_t) noexcept {
    static_cast<child_flag*>(context)->fired.store(true);
  }
};

int use_timers_in_child() {
  alarm(20);  // a timer thread that was not re-created would hang: die instead
  if (xcs::detail::timer_thread_started()) return parent_thread_seen;
  child_flag flag;
  const steady_time when = steady::now() + 5ms;
  add_timer(when, &child_flag::run, &flag, 0);
  while (!flag.fired.load()) {
    if (steady::now() > when + 5s) return did_not_fire;
    std::this_thread::sleep_for(200us);
  }
  if (steady::now() < when) return fired_early;
  return child_ok;
}

/// Adds itself again every 100 us, so that the timer thread is busy (and its lock often
/// held) when the test forks.
struct ticker {
  std::atomic<bool> stop{false};
  std::atomic<int> ticks{0};
  static void run(void* context, std::uint64_t) noexcept {
    auto& t = *static_cast<ticker*>(context);
    t.ticks.fetch_add(1);
    if (!t.stop.load()) add_timer(steady::now() + 100us, &ticker::run, &t, 0);
  }
};

TEST(TimerTest, ChildAfterForkCanUseTimers) {
#if defined(__SANITIZE_THREAD__) || defined(XCS_SANITIZE_THREAD)
  GTEST_SKIP() << "TSan does not support threads in a child of a multithreaded process";
#endif
  // Static storage: the last tick may run after this test ends.
  static ticker tick;
  tick.stop.store(false);
  add_timer(steady::now(), &ticker::run, &tick, 0);
  auto give_up = xcs_test::give_up();
  while (tick.ticks.load() < 10 && steady::now() < give_up) std::this_thread::sleep_for(1ms);
  ASSERT_GE(tick.ticks.load(), 10);
  for (int i = 0; i < 5; ++i) {
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) _exit(use_timers_in_child());
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status)) << "the child was killed (signal " << WTERMSIG(status) << ")";
    EXPECT_EQ(WEXITSTATUS(status), child_ok) << "fork " << i;
  }
  // The parent's timers go on.
  int ticks = tick.ticks.load();
  while (tick.ticks.load() < ticks + 10 && steady::now() < give_up) {
    std::this_thread::sleep_for(1ms);
  }
  EXPECT_GE(tick.ticks.load(), ticks + 10);
  tick.stop.store(true);
}

/// In a child: a timer added from a static object's destructor, while the process exits, runs
/// and does not crash, whether the timer thread was started before or in that destructor.
struct add_at_exit {
  ~add_at_exit() {
    child_flag flag;
    add_timer(steady::now() + 1ms, &child_flag::run, &flag, 0);
    const auto give_up = steady::now() + 5s;
    while (!flag.fired.load()) {
      if (steady::now() > give_up) std::_Exit(did_not_fire);
      std::this_thread::sleep_for(100us);
    }
    // Another one left pending as the process ends.
    static child_flag never;
    add_timer(steady::now() + 1h, &child_flag::run, &never, 0);
  }
};

TEST(TimerTest, TimerAddedDuringStaticDestructionRuns) {
#if defined(__SANITIZE_THREAD__) || defined(XCS_SANITIZE_THREAD)
  GTEST_SKIP() << "TSan does not support threads in a child of a multithreaded process";
#endif
  for (bool start_first : {false, true}) {
    std::fflush(nullptr);  // the child runs exit(): it must not print the parent's buffers again
    pid_t child = fork();
    ASSERT_GE(child, 0);
    if (child == 0) {
      alarm(20);
      if (start_first) {
        child_flag flag;
        add_timer(steady::now(), &child_flag::run, &flag, 0);
        while (!flag.fired.load()) std::this_thread::sleep_for(100us);
      }
      static add_at_exit at_exit;
      std::exit(child_ok);
    }
    int status = 0;
    ASSERT_EQ(waitpid(child, &status, 0), child);
    ASSERT_TRUE(WIFEXITED(status)) << "the child was killed (signal " << WTERMSIG(status) << ")";
    EXPECT_EQ(WEXITSTATUS(status), child_ok) << "timer thread started first: " << start_first;
  }
}

}  // namespace
