// SPDX-License-Identifier: MIT
// Stats: counters, the analysis of the last plan, the measured speedup, and printing with fmt
// and operator<<.
#include <fmt/format.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using ::testing::HasSubstr;
using xcs_test::sleep_ms;

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

TEST(StatsTest, MeasuredSpeedupOfTwoParallelSleeps) {
  auto wait = xcs::op("wait", [](int v) {
    sleep_ms(50);
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) { return wait(a) + wait(b); });
  EXPECT_EQ(f(1, 2), 3);
  EXPECT_EQ(f(3, 4), 7);
  auto st = f.stats();
  EXPECT_TRUE(st.optimized);
  EXPECT_EQ(st.plan_runs, 2u);
  EXPECT_GT(st.speedup, 1.5) << "two 50 ms sleeps side by side; measured " << st.speedup;
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
      EXPECT_LE(in_stats, measured + 5e6) << what << ", call " << call;
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

}  // namespace
