// SPDX-License-Identifier: MIT
// Wall-clock bounds: what the parallelism is worth in time, on a plain build. The ctest label
// `timing` marks these; they run one at a time, and sanitizer runs skip them (-LE timing),
// since ASan and TSan stretch every op. The other tests assert overlap instead of time.
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <numeric>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using xcs_test::sleep_ms;
using xcs_test::start_times;
using xcs_test::time_ms;

/// A jitted function that runs `op` on each element of a vector argument.
template <class Op>
auto each(Op op) {
  return xcs::jit([op](const auto& items) {
    std::vector<decltype(op(items[0]))> out;
    out.reserve(items.size());
    for (const auto& it : items) out.push_back(op(it));
    return out;
  });
}

TEST(TimingTest, FourIndependentFetchesTakeAboutOne) {
  start_times starts;
  auto fetch = xcs::op("fetch", [&](int v) {
    starts.record();
    sleep_ms(100);
    return v;
  });
  auto f = xcs::jit(
      [&](auto a, auto b, auto c, auto d) { return fetch(a) + fetch(b) + fetch(c) + fetch(d); });
  for (int call = 0; call < 2; ++call) {
    starts.reset();
    int got = 0;
    double ms = time_ms([&] { got = f(1, 2, 3, 4); });
    EXPECT_EQ(got, 10);
    EXPECT_LT(ms, 300.0) << "call " << call << " (serially 400 ms)";
    std::vector<double> s = starts.get();
    ASSERT_EQ(s.size(), 4u);
    auto [first, last] = std::minmax_element(s.begin(), s.end());
    EXPECT_LT(*last - *first, 60.0) << "the fetches did not start together (call " << call << ")";
  }
}

TEST(TimingTest, ACheapPlanIsSharedAgainOnceItsOpsGrowSlow) {
  // Measured cheap, the calls run on the caller in program order; once the ops take 40 ms,
  // the next calls overlap them again (serially 160 ms).
  std::atomic<int> wait_ms{0};
  auto fetch = xcs::op("fetch", [&](int v) {
    if (int ms = wait_ms.load()) sleep_ms(ms);
    return v;
  });
  auto f = xcs::jit(
      [&](auto a, auto b, auto c, auto d) { return fetch(a) + fetch(b) + fetch(c) + fetch(d); });
  for (int i = 0; i < 50; ++i) ASSERT_EQ(f(i, 1, 2, 3), i + 6);
  wait_ms.store(40);
  EXPECT_EQ(f(1, 2, 3, 4), 10);  // may run in order: its ops were cheap until now
  double ms = time_ms([&] { EXPECT_EQ(f(1, 2, 3, 4), 10); });
  EXPECT_LT(ms, 110.0) << "a plan once cheap stayed serial (serially 160 ms)";
}

TEST(TimingTest, BlockingCallsWithoutHintTakeWellUnder300Ms) {
  auto call_api = xcs::op("call_api", [](int v) {
    sleep_ms(50);
    return v + 1;
  });
  auto f = each(call_api);
  std::vector<int> in(32, 1);
  // The first call has to find out that call_api blocks; the second knows it.
  for (int call = 0; call < 2; ++call) {
    std::vector<int> got;
    double ms = time_ms([&] { got = f(in); });
    EXPECT_EQ(got, std::vector<int>(32, 2));
    // The contract: 32 x 50 ms blocking calls (1600 ms serially) take well under 300 ms.
    EXPECT_LT(ms, 300.0) << "call " << call;
    RecordProperty("call" + std::to_string(call) + "_ms", static_cast<int>(ms));
  }
}

TEST(TimingTest, HintedBlockingOpsTakeAboutOneFromTheFirstCall) {
  auto fetch = xcs::op(
      "fetch",
      [](int v) {
        sleep_ms(50);
        return v;
      },
      xcs::blocking);
  auto f = each(fetch);
  std::vector<int> in(16, 1);
  std::vector<int> got;
  double ms = time_ms([&] { got = f(in); });
  EXPECT_EQ(got, in);
  EXPECT_LT(ms, 250.0) << "16 x 50 ms (serially 800 ms)";
}

TEST(TimingTest, ConcurrentCallsOverlapTheirBlockingOps) {
  auto fetch = xcs::op(
      "fetch",
      [](int v) {
        sleep_ms(50);
        return v;
      },
      xcs::blocking);
  auto f = xcs::jit([&](auto a, auto b) { return fetch(a) + fetch(b); });
  EXPECT_EQ(f(0, 0), 0);  // trace outside the timing
  std::vector<std::thread> callers;
  std::vector<int> got(4);
  double ms = time_ms([&] {
    for (int t = 0; t < 4; ++t) callers.emplace_back([&, t] { got[t] = f(t, t); });
    for (auto& th : callers) th.join();
  });
  for (int t = 0; t < 4; ++t) EXPECT_EQ(got[t], 2 * t);
  EXPECT_LT(ms, 250.0) << "8 blocking 50 ms ops from 4 concurrent calls (serially 400 ms)";
}

TEST(TimingTest, NestedBlockingOpsTakeAboutOne) {
  auto fetch = xcs::op("fetch", [](int v) {
    sleep_ms(30);
    return v;
  });
  auto inner = xcs::jit([&](auto a, auto b) { return fetch(a) + fetch(b); });
  auto outer_op = xcs::op("outer_op", [&](int v) { return inner(v, v); });
  auto outer = xcs::jit([&](auto a, auto b, auto c, auto d) {
    return outer_op(a) + outer_op(b) + outer_op(c) + outer_op(d);
  });
  EXPECT_EQ(outer(1, 2, 3, 4), 20);  // learns that fetch blocks
  double ms = time_ms([&] { EXPECT_EQ(outer(1, 2, 3, 4), 20); });
  EXPECT_LT(ms, 200.0) << "8 nested 30 ms fetches (serially 240 ms; in parallel ~30)";
}

TEST(TimingTest, MeasuredSpeedupOfTwoParallelSleeps) {
  auto wait = xcs::op("wait", [](int v) {
    sleep_ms(50);
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) { return wait(a) + wait(b); });
  EXPECT_EQ(f(1, 2), 3);
  EXPECT_EQ(f(3, 4), 7);
  double speedup = f.stats().speedup;
  EXPECT_GT(speedup, 1.5) << "two 50 ms sleeps side by side";
  EXPECT_LE(speedup, 2.2);
}

TEST(TimingTest, BatchTimeGrowsLinearly) {
  auto inc = xcs::op("inc", [](int x) { return x + 1; });
  auto first_call_s = [&](std::size_t n) {
    std::vector<int> v(n);
    std::iota(v.begin(), v.end(), 0);
    auto f = each(inc);  // a new function: the call traces, compiles and runs
    std::vector<int> r;
    double ms = time_ms([&] { r = f(v); });
    EXPECT_EQ(r.size(), n);
    EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
    std::printf("[timing] batch of %zu ops: first call %.3f s\n", n, ms / 1000);
    return ms / 1000;
  };
  double small = first_call_s(100'000);
  double big = first_call_s(1'000'000);
  // Linear would be 10x; allow for a loaded machine, not for quadratic (100x).
  EXPECT_LT(big, 30 * small + 1.0) << "10x the nodes took " << big / small << "x the time";
}

}  // namespace
