// SPDX-License-Identifier: MIT
// Nested jit: a jitted function called inside an op of another never deadlocks, at pool sizes
// 1, 2 and 4.
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using xcs_test::deadline;
using xcs_test::sleep_ms;
using xcs_test::spin_ms;

class NestedTest : public xcs_test::PoolSizeTest {};

TEST_P(NestedTest, JittedCallInsideOpOfAnotherDoesNotDeadlock) {
  auto leaf = xcs::op("leaf", [](int v) {
    spin_ms(1);
    return v + 1;
  });
  auto inner = xcs::jit([&](auto a, auto b) { return leaf(a) * leaf(b); });
  auto outer_op = xcs::op("outer_op", [&](int v) { return inner(v, v + 1); });
  auto outer = xcs::jit([&](auto a, auto b, auto c, auto d) {
    return outer_op(a) + outer_op(b) + outer_op(c) + outer_op(d);
  });
  auto expected = [](int v) { return (v + 1) * (v + 2); };
  deadline limit(std::chrono::seconds(30), "nested jit");
  for (int call = 0; call < 20; ++call) {
    ASSERT_EQ(outer(call, 1, 2, 3), expected(call) + expected(1) + expected(2) + expected(3));
  }
  EXPECT_TRUE(outer.stats().optimized);
  EXPECT_TRUE(inner.stats().optimized);
  EXPECT_EQ(inner.stats().calls, 80u);
  EXPECT_EQ(inner.stats().traces, 1u);
}

TEST_P(NestedTest, NestedBlockingOpsStillOverlap) {
  xcs_test::concurrency_meter meter;
  auto fetch = xcs::op("fetch", [&](int v) {
    xcs_test::concurrency_meter::guard g(meter);
    meter.await_peak(8, xcs_test::give_up());
    return v;
  });
  auto inner = xcs::jit([&](auto a, auto b) { return fetch(a) + fetch(b); });
  auto outer_op = xcs::op("outer_op", [&](int v) { return inner(v, v); });
  auto outer = xcs::jit([&](auto a, auto b, auto c, auto d) {
    return outer_op(a) + outer_op(b) + outer_op(c) + outer_op(d);
  });
  deadline limit(std::chrono::seconds(60), "nested jit with blocking ops");
  for (int call = 0; call < 2; ++call) {  // the first call learns that fetch blocks
    meter.reset();
    EXPECT_EQ(outer(1, 2, 3, 4), 20);
    EXPECT_EQ(meter.max(), 8) << "the 8 nested fetches did not all run at once (call " << call
                              << ")";
  }
}

// A nested run whose nodes all run elsewhere leaves its owner nothing to do. On a CPU worker the
// owner's fiber suspends and the worker goes on with other work; stats() counts it. Sanitizer
// builds run this path too (the switches are annotated for ASan and TSan).
TEST_P(NestedTest, WaitingNestedRunOnAWorkerSuspendsItsFiber) {
  xcs_test::concurrency_meter meter;
  auto fetch = xcs::op(
      "fetch",
      [&](int v) {
        xcs_test::concurrency_meter::guard g(meter);
        meter.await_peak(4, xcs_test::give_up());
        return v;
      },
      xcs::blocking);
  auto inner = xcs::jit([&](auto a, auto b) { return fetch(a) + fetch(b); });
  auto outer_op = xcs::op("outer_op", [&](int v) { return inner(v, v); });
  auto outer = xcs::jit([&](auto a, auto b, auto c, auto d) {
    return outer_op(a) + outer_op(b) + outer_op(c) + outer_op(d);
  });
  deadline limit(std::chrono::seconds(60), "nested runs waiting on workers");
  const std::uint64_t before = outer.stats().fiber_suspensions;
  for (int call = 0; call < 3; ++call) {
    meter.reset();
    ASSERT_EQ(outer(1, 2, 3, 4), 20);
    EXPECT_GE(meter.max(), 4) << "two nested runs did not overlap (call " << call << ")";
  }
  xcs::stats st = outer.stats();
  EXPECT_GT(st.fiber_suspensions, before) << "no waiting nested run suspended its fiber";
  EXPECT_NE(xcs::to_string(st).find("fiber_suspensions="), std::string::npos);
  // New workers replace those that hold spare fibers, which unwind them as they stop.
  xcs::set_thread_count(GetParam());
  meter.reset();
  EXPECT_EQ(outer(1, 2, 3, 4), 20);
}

TEST_P(NestedTest, ThreeLevelsDeep) {
  auto leaf = xcs::op("leaf", [](int v) { return v * 2; });
  auto level1 = xcs::jit([&](auto a, auto b) { return leaf(a) + leaf(b); });
  auto op1 = xcs::op("op1", [&](int v) { return level1(v, 1); });
  auto level2 = xcs::jit([&](auto a, auto b) { return op1(a) + op1(b); });
  auto op2 = xcs::op("op2", [&](int v) { return level2(v, 2); });
  auto level3 = xcs::jit([&](auto a, auto b, auto c) { return op2(a) + op2(b) + op2(c); });
  auto ref_level2 = [](int a, int b) { return (2 * a + 2) + (2 * b + 2); };
  deadline limit(std::chrono::seconds(30), "three levels of nested jit");
  for (int call = 0; call < 10; ++call) {
    ASSERT_EQ(level3(call, 1, 2), ref_level2(call, 2) + ref_level2(1, 2) + ref_level2(2, 2));
  }
}

TEST_P(NestedTest, NestedExceptionReachesTheOuterCaller) {
  struct inner_failure {
    int id;
  };
  auto leaf = xcs::op("leaf", [](int v) -> int {
    if (v == 13) throw inner_failure{v};
    return v;
  });
  auto inner = xcs::jit([&](auto a, auto b) { return leaf(a) + leaf(b); });
  auto outer_op = xcs::op("outer_op", [&](int v) { return inner(v, 0); });
  auto outer = xcs::jit([&](auto a, auto b) { return outer_op(a) + outer_op(b); });
  deadline limit(std::chrono::seconds(30), "nested exception");
  EXPECT_EQ(outer(1, 2), 3);
  try {
    outer(2, 13);
    FAIL() << "expected inner_failure";
  } catch (const inner_failure& e) {
    EXPECT_EQ(e.id, 13);
  }
  EXPECT_EQ(outer(4, 5), 9);
}

TEST_P(NestedTest, ManyCallersWithNestedJit) {
  auto leaf = xcs::op("leaf", [](int v) { return v + 1; });
  auto inner = xcs::jit([&](auto a, auto b) { return leaf(a) + leaf(b); });
  auto outer_op = xcs::op("outer_op", [&](int v) { return inner(v, v); });
  auto outer = xcs::jit([&](auto a, auto b) { return outer_op(a) + outer_op(b); });
  deadline limit(std::chrono::seconds(60), "many callers with nested jit");
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int c = 0; c < 100; ++c) {
        if (outer(t, c) != (2 * t + 2) + (2 * c + 2)) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

XCS_TEST_POOL_SIZES(NestedTest);

TEST(NestedBranchyTest, TwoBranchyCallsInsideABodyOverlap) {
  // The inner body reads its op's result (a branch). Inlined, each of its reads would hold the
  // outer body; once a call has read, the calls are nodes of the outer call, each a whole
  // staged call of `inner`, so the two calls' fetches run at the same time.
  xcs_test::concurrency_meter meter;
  auto fetch = xcs::op(
      "fetch",
      [&](int v) {
        xcs_test::concurrency_meter::guard g(meter);
        meter.await_peak(2, xcs_test::give_up());
        return v;
      },
      xcs::blocking);
  auto twice = xcs::op("twice", [](int v) { return 2 * v; });
  auto inner = xcs::jit([&](auto a) {
    auto x = fetch(a);
    if (x > 0) return twice(x);
    return twice(-x);
  });
  auto outer = xcs::jit([&](auto a, auto b) { return twice(inner(a)) + twice(inner(b)); });
  deadline limit(std::chrono::seconds(60), "nested branchy calls");
  EXPECT_EQ(outer(3, -4), 4 * 3 + 4 * 4);  // learns that inner reads
  meter.reset();
  EXPECT_EQ(outer(5, -6), 4 * 5 + 4 * 6);
  EXPECT_EQ(meter.max(), 2) << "the two inner calls ran one after the other";
  // The first outer call inlined its first inner call (which read) and made the second a
  // node; the second outer call made both nodes: three staged calls of `inner`.
  EXPECT_EQ(inner.stats().staged_calls, 3u);
  EXPECT_EQ(outer.stats().fallback_calls, 0u);
}

}  // namespace
