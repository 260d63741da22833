// SPDX-License-Identifier: MIT
// Stats: counters, the analysis of the last plan, the measured speedup, and printing with fmt
// and operator<<.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xcs/xcs.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using ::testing::HasSubstr;
using ::testing::Not;
using xcs_test::concurrency_meter;
using xcs_test::sleep_ms;
using xcs_test::steady;

TEST(StatsTest, FreshFunctionHasEmptyStats) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto f = xcs::jit([&](auto a, auto b) { return id(a) + id(b); });
  auto st = f.stats();
  EXPECT_EQ(st.calls, 0u);
  EXPECT_EQ(st.traces, 0u);
  EXPECT_EQ(st.cache_entries, 0u);
  EXPECT_FALSE(st.optimized);
  EXPECT_EQ(st.fallback_calls, 0u);
  EXPECT_TRUE(st.fallback_reason.empty());
  EXPECT_EQ(st.speedup, 0.0);
}

TEST(StatsTest, MeasuredSpeedupIsOpTimeOverWallTime) {
  // Two waits that overlap (each holds until both run). The run's wall time lies inside the
  // calls as the caller times them, and each op's time around its body as the op times it, so
  // the measured speedup is at least (body time) / (call time); with two ops, at most 2.
  concurrency_meter meter;
  std::atomic<std::int64_t> body_ns{0};
  auto wait = xcs::op("wait", [&](int v) {
    auto t0 = steady::now();
    {
      concurrency_meter::guard g(meter);
      meter.await_peak(2, xcs_test::give_up());
      sleep_ms(50);
    }
    body_ns += std::chrono::duration_cast<std::chrono::nanoseconds>(steady::now() - t0).count();
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) { return wait(a) + wait(b); });
  double call_ms = xcs_test::time_ms([&] {
    EXPECT_EQ(f(1, 2), 3);
    EXPECT_EQ(f(3, 4), 7);
  });
  auto st = f.stats();
  EXPECT_EQ(meter.max(), 2) << "the two waits did not overlap";
  EXPECT_TRUE(st.optimized);
  EXPECT_EQ(st.plan_runs, 2u);
  double floor = static_cast<double>(body_ns.load()) / (call_ms * 1e6);
  EXPECT_GE(st.speedup, 0.95 * floor) << "op time over wall time; measured " << st.speedup;
  EXPECT_GT(st.speedup, 1.0) << "two overlapping 50 ms waits; measured " << st.speedup;
  EXPECT_LE(st.speedup, 2.2);                   // two ops cannot give more than 2
  EXPECT_DOUBLE_EQ(st.estimated_speedup, 1.5);  // 3 nodes over a critical path of 2
  EXPECT_EQ(st.nodes, 3u);                      // two waits and a +
  EXPECT_EQ(st.max_parallelism, 2u);
  EXPECT_EQ(st.parallel_groups, 2u);
  RecordProperty("speedup_x100", static_cast<int>(st.speedup * 100));
}

TEST(StatsTest, FallbackReasonAndCounts) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) { return id(id(a)); });
  f(1);
  f(2);
  auto st = f.stats();
  EXPECT_FALSE(st.optimized);
  EXPECT_EQ(st.calls, 2u);
  EXPECT_EQ(st.fallback_calls, 2u);
  EXPECT_EQ(st.plan_runs, 0u);
  EXPECT_THAT(st.fallback_reason, HasSubstr("no independent ops"));
}

TEST(StatsTest, PrintsWithFmtAndOstream) {
  auto id = xcs::op("lookup", [](int v) { return v; });
  auto f = xcs::jit([&](auto a, auto b) { return id(a) + id(b); });
  f(1, 2);
  f(3, 4);
  auto st = f.stats();
  std::string via_fmt = fmt::format("{}", st);
  std::ostringstream os;
  os << st;
  EXPECT_EQ(via_fmt, os.str());
  EXPECT_THAT(via_fmt, HasSubstr("calls=2"));
  EXPECT_THAT(via_fmt, HasSubstr("traces=1"));
  EXPECT_THAT(via_fmt, HasSubstr("optimized=true"));
  EXPECT_THAT(via_fmt, HasSubstr("speedup="));
  EXPECT_THAT(via_fmt, HasSubstr("lookup"));
  EXPECT_EQ(xcs::to_string(st), via_fmt);
}

TEST(StatsTest, PrintedFallbackShowsTheReason) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) { return id(id(a)); });
  f(1);
  std::string text = fmt::format("{}", f.stats());
  EXPECT_THAT(text, HasSubstr("fallback_reason"));
  EXPECT_THAT(text, HasSubstr("no independent ops"));
}

TEST(StatsTest, PerOpStatsMeasureTime) {
  auto wait = xcs::op("wait", [](int v) {
    sleep_ms(10);
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) { return wait(a) + wait(b); });
  f(1, 2);
  auto st = f.stats();
  ASSERT_FALSE(st.ops.empty());
  EXPECT_EQ(st.ops.front().name, "wait");  // largest total time first
  EXPECT_EQ(st.ops.front().calls, 2u);
  EXPECT_GE(st.ops.front().total_ns, 18'000'000u);
  EXPECT_GE(st.ops.front().max_ns, 9'000'000u);
}

// An op's time in stats covers its whole call, so it is never less than what the op measures
// of itself, on the first call as on later ones, whether the call runs a plan or staged.
TEST(StatsTest, FirstCallOpTimesAreNotLessThanTheOpsOwnClock) {
  std::atomic<std::int64_t> inside_ns{0};
  auto wait = xcs::op("wait", [&](int v) {
    auto t0 = std::chrono::steady_clock::now();
    sleep_ms(20);
    inside_ns +=
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0)
            .count();
    return v;
  });
  auto planned = xcs::jit([&](auto a, auto b) { return wait(a) + wait(b); });
  auto staged = xcs::jit([&](auto a, auto b) {
    auto x = wait(a), y = wait(b);
    return x > y ? x : y;  // a read: the call runs staged
  });
  auto check = [&](auto& f, const char* what) {
    for (int call = 1; call <= 2; ++call) {
      std::uint64_t before = 0;
      for (const auto& o : f.stats().ops) before += o.total_ns;
      inside_ns = 0;
      f(1, 2);
      std::uint64_t total = 0;
      for (const auto& o : f.stats().ops) total += o.total_ns;
      auto in_stats = static_cast<double>(total - before);
      auto measured = static_cast<double>(inside_ns.load());
      // 0.05% of 40 ms (20 µs) for the two clocks' reads; a call's overhead only adds.
      EXPECT_GE(in_stats, measured * 0.9995)
          << what << ", call " << call << ": stats " << in_stats / 1e6 << " ms, the ops measured "
          << measured / 1e6 << " ms";
      // Above: only by the call's overhead, and by a preemption on a loaded machine.
      EXPECT_LE(in_stats, measured * 1.02 + 50e6) << what << ", call " << call;
    }
  };
  check(planned, "plan");
  check(staged, "staged");
}

TEST(StatsTest, RunsThatThrowAreCounted) {
  auto ok = xcs::op("ok", [](int v) { return v; });
  auto fail = xcs::op("fail", [](int v) -> int {
    if (v < 0) throw std::runtime_error("negative");
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) { return ok(a) + fail(b); });
  EXPECT_EQ(f(1, 2), 3);
  EXPECT_THROW(f(1, -2), std::runtime_error);
  xcs::stats st = f.stats();
  EXPECT_EQ(st.plan_runs, 2u);
  auto failing = std::find_if(st.ops.begin(), st.ops.end(),
                              [](const xcs::op_stats& o) { return o.name == "fail"; });
  ASSERT_NE(failing, st.ops.end());
  EXPECT_EQ(failing->calls, 2u);
  EXPECT_EQ(failing->errors, 1u);
}

TEST(StatsTest, SameVectorPassedToTwoOpsIsPackedOnce) {
  auto ask = xcs::op("ask", [](int v) { return v * 2; });
  auto total = xcs::op("total", [](const std::vector<int>& v) {
    int s = 0;
    for (int x : v) s += x;
    return s;
  });
  auto count =
      xcs::op("count", [](const std::vector<int>& v) { return static_cast<int>(v.size()); });
  auto f = xcs::jit([&](auto a, auto b) {
    std::vector<decltype(ask(a))> answers{ask(a), ask(b)};
    return total(answers) + count(answers);
  });
  EXPECT_EQ(f(1, 2), 8);
  std::string listing = f.explain(1, 2);
  std::size_t packs = 0;
  for (std::size_t p = listing.find("pack("); p != std::string::npos;
       p = listing.find("pack(", p + 1)) {
    ++packs;
  }
  EXPECT_EQ(packs, 1u) << listing;
}

// ---- the process's runtime ----------------------------------------------------------------

TEST(StatsTest, RuntimeFiguresShowTheBlockingLane) {
  concurrency_meter meter;
  auto fetch = xcs::op(
      "fetch",
      [&](int v) {
        concurrency_meter::guard g(meter);
        meter.await_peak(3, xcs_test::give_up());
        return v;
      },
      xcs::blocking);
  auto f = xcs::jit([&](auto a, auto b, auto c) { return fetch(a) + fetch(b) + fetch(c); });
  EXPECT_EQ(f(1, 2, 3), 6);
  ASSERT_EQ(meter.max(), 3);
  xcs::stats st = f.stats();
  EXPECT_GE(st.blocking_threads_peak, 3u) << "three blocking ops ran at once on the lane";
  EXPECT_LE(st.blocking_threads, xcs::blocking_thread_limit());
  EXPECT_TRUE(st.pool_degradation.empty()) << st.pool_degradation;
  std::string text = fmt::format("{}", st);
  EXPECT_THAT(text, HasSubstr(fmt::format("(peak {})", st.blocking_threads_peak))) << text;
  EXPECT_THAT(text, Not(HasSubstr("pool degraded"))) << text;
  // Process-wide: any function's stats show them.
  auto id = xcs::op("id", [](int v) { return v; });
  auto g = xcs::jit([&](auto a) { return id(a); });
  EXPECT_GE(g.stats().blocking_threads_peak, st.blocking_threads_peak);
}

#if !defined(XCS_SANITIZE_ADDRESS) && !defined(XCS_SANITIZE_THREAD)
/// In a child whose address space has no room for another thread's stack: the pool starts no
/// worker and no monitor, the call still runs (on the caller), and stats() says so.
int run_degraded_child() {
  long pages = 0;
  if (std::FILE* statm = std::fopen("/proc/self/statm", "r")) {
    if (std::fscanf(statm, "%ld", &pages) != 1) pages = 0;
    std::fclose(statm);
  }
  if (pages <= 0) return 10;
  rlimit as{};
  as.rlim_cur = as.rlim_max = static_cast<rlim_t>(pages) * 4096 + (4 << 20);  // < a stack
  if (setrlimit(RLIMIT_AS, &as) != 0) return 11;
  auto id = xcs::op("id", [](int v) { return v; });
  auto f = xcs::jit([&](auto a, auto b) { return id(a) + id(b); });
  if (f(1, 2) != 3) return 12;
  xcs::stats st = f.stats();
  if (st.pool_degradation.find("0 of ") == std::string::npos) return 13;
  if (st.pool_degradation.find("monitor could not start") == std::string::npos) return 14;
  if (xcs::to_string(st).find("pool degraded: 0 of ") == std::string::npos) return 15;
  return 0;
}

TEST(StatsTest, DegradedPoolIsShown) {
  // The child is this test again, in a fresh process (exec), so that no thread stack cached
  // by the C library from earlier tests lets a thread start under the limit.
  if (std::getenv("XCS_TEST_DEGRADED_CHILD")) _exit(run_degraded_child());
  std::fflush(nullptr);
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    setenv("XCS_TEST_DEGRADED_CHILD", "1", 1);
    execl("/proc/self/exe", "stats_test", "--gtest_filter=StatsTest.DegradedPoolIsShown",
          static_cast<char*>(nullptr));
    _exit(16);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status)) << "signal " << WTERMSIG(status);
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10-11: no address-space limit, 12: wrong result, "
                                       "13-15: degradation not shown, 16: exec failed";
}
#endif

}  // namespace
