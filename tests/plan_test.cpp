// SPDX-License-Identifier: MIT
// Running a plan: every op exactly once per call, and the direct call's exception, in program
// order, with later ops not started and started ones waited for.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using ::testing::HasSubstr;
using xcs_test::invocation_counter;
using xcs_test::sleep_ms;

/// An op's exception with an id, and the address of the object the op threw, so a test can
/// check that the caller catches that very object.
struct op_failure : std::runtime_error {
  explicit op_failure(int i) : std::runtime_error("op failure " + std::to_string(i)), id(i) {}
  op_failure(const op_failure& o) : std::runtime_error(o), id(o.id), origin(nullptr) {}
  int id;
  const op_failure* origin = nullptr;  ///< set by the thrower; a copy has none
};

/// Throws an op_failure that knows its own address.
[[noreturn]] void throw_failure(int id) {
  try {
    throw op_failure(id);
  } catch (op_failure& e) {
    e.origin = &e;
    throw;
  }
}

// ---- exactly once ------------------------------------------------------------------------

TEST(PlanTest, EachOpRunsOncePerCallEvenIfItsResultIsUnused) {
  invocation_counter used, unused, side;
  auto compute = xcs::op("compute", [&](int v) {
    used.hit();
    return v + 1;
  });
  auto audit = xcs::op("audit", [&](int v) {
    unused.hit();
    return v;
  });
  auto notify = xcs::op("notify", [&](int) { side.hit(); });
  auto f = xcs::jit([&](auto a, auto b) {
    auto ignored = audit(a);  // result never used
    (void)ignored;
    notify(b);  // void op
    return compute(a) + compute(b);
  });
  for (int call = 1; call <= 10; ++call) {
    EXPECT_EQ(f(call, 1), call + 3);
    EXPECT_EQ(used.count(), 2 * call);
    EXPECT_EQ(unused.count(), call);
    EXPECT_EQ(side.count(), call);
  }
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(PlanTest, SameOpOnSameInputRunsOncePerRecordedCall) {
  invocation_counter runs;
  auto charge = xcs::op("charge", [&](int v) {
    runs.hit();
    return v;
  });
  // Two calls with the same input are two side effects, never merged.
  auto f = xcs::jit([&](auto a) { return charge(a) + charge(a); });
  EXPECT_EQ(f(5), 10);
  EXPECT_EQ(runs.count(), 2);
  EXPECT_EQ(f(6), 12);
  EXPECT_EQ(runs.count(), 4);
}

TEST(PlanTest, PerOpStatsCountRuns) {
  auto a_op = xcs::op("alpha", [](int v) { return v; });
  auto b_op = xcs::op("beta", [](int v) { return v; });
  auto f = xcs::jit([&](auto x, auto y) { return a_op(x) + a_op(y) + b_op(x); });
  for (int i = 0; i < 5; ++i) f(i, i);
  auto st = f.stats();
  ASSERT_EQ(st.fallback_calls, 0u) << st.fallback_reason;
  std::uint64_t alpha = 0, beta = 0;
  for (const auto& o : st.ops) {
    if (o.name == "alpha") alpha = o.calls;
    if (o.name == "beta") beta = o.calls;
  }
  EXPECT_EQ(alpha, 10u);
  EXPECT_EQ(beta, 5u);
}

// ---- exceptions --------------------------------------------------------------------------

TEST(PlanTest, FirstThrowingOpInProgramOrderWins) {
  // op 1 throws late, op 2 throws at once: the direct call would have thrown op 1's.
  auto late = xcs::op("late", [](int id) -> int {
    sleep_ms(40);
    throw_failure(id);
  });
  auto early = xcs::op("early", [](int id) -> int { throw_failure(id); });
  auto body = [&](auto a, auto b) {
    auto x = late(a);
    auto y = early(b);
    return x + y;
  };
  auto f = xcs::jit(body);
  for (int call = 0; call < 3; ++call) {
    try {
      f(1, 2);
      FAIL() << "expected op_failure";
    } catch (const op_failure& e) {
      EXPECT_EQ(e.id, 1) << "call " << call;
      EXPECT_EQ(e.origin, &e) << "the caller got a copy, not the object the op threw";
    }
  }
  try {
    body(1, 2);
  } catch (const op_failure& e) {
    EXPECT_EQ(e.id, 1);
  }
  EXPECT_EQ(f.stats().fallback_calls, 0u) << "an op's exception is not a reason to fall back";
}

TEST(PlanTest, ExceptionArrivesAsSameObjectAndType) {
  auto check = xcs::op("check", [](int v) {
    if (v < 0) throw_failure(v);
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) { return check(a) + check(b); });
  EXPECT_EQ(f(1, 2), 3);
  try {
    f(4, -7);
    FAIL() << "expected op_failure";
  } catch (const op_failure& e) {
    EXPECT_EQ(e.id, -7);
    EXPECT_EQ(e.origin, &e);
    EXPECT_STREQ(e.what(), "op failure -7");
  } catch (...) {
    FAIL() << "the exception was wrapped or replaced";
  }
  // The plan stays usable; no retrace, no fallback.
  EXPECT_EQ(f(10, 20), 30);
  auto st = f.stats();
  EXPECT_EQ(st.traces, 1u);
  EXPECT_EQ(st.fallback_calls, 0u);
}

TEST(PlanTest, NonStandardExceptionPassesThrough) {
  auto boom = xcs::op("boom", [](int v) -> int {
    if (v == 0) throw 42;
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) { return boom(a) + boom(b); });
  EXPECT_EQ(f(1, 1), 2);
  try {
    f(1, 0);
    FAIL() << "expected int";
  } catch (int v) {
    EXPECT_EQ(v, 42);
  } catch (...) {
    FAIL() << "expected int 42";
  }
}

TEST(PlanTest, EarlierOpStillRunningDecidesTheException) {
  // `later` throws while `earlier` (before it in program order) still runs: `earlier` holds
  // until `later` has thrown. Which exception the call throws is decided only when `earlier`
  // ends: its own if it throws (time order would pick `later`'s), else `later`'s.
  std::atomic<bool> later_threw{false}, slow_finished{false}, finished_when_later_threw{false};
  auto earlier = xcs::op("earlier", [&](int id) -> int {
    for (auto end = xcs_test::give_up(); !later_threw && xcs_test::steady::now() < end;) {
      sleep_ms(1);
    }
    sleep_ms(5);  // still running well after the throw
    slow_finished = true;
    if (id > 0) throw_failure(id);
    return id;
  });
  auto later = xcs::op("later", [&](int id) -> int {
    finished_when_later_threw = slow_finished.load();
    later_threw = true;
    throw_failure(id);
  });
  auto f = xcs::jit([&](auto a, auto b) {
    auto x = earlier(a);
    auto y = later(b);
    return x + y;
  });
  for (int earlier_id : {1, 0, 1, 0}) {
    later_threw = slow_finished = finished_when_later_threw = false;
    try {
      f(earlier_id, 9);
      ADD_FAILURE() << "expected op_failure";
    } catch (const op_failure& e) {
      EXPECT_EQ(e.id, earlier_id ? earlier_id : 9) << "earlier op " << earlier_id;
      EXPECT_EQ(e.origin, &e);
    }
    EXPECT_TRUE(later_threw.load()) << "the later op did not run beside the earlier one";
    EXPECT_FALSE(finished_when_later_threw.load()) << "the earlier op had ended already";
    EXPECT_TRUE(slow_finished.load()) << "the call returned before the earlier op ended";
  }
  EXPECT_EQ(f.stats().fallback_calls, 0u);
}

TEST(PlanTest, OpsAfterTheThrowingOneDoNotStartAndStartedOnesAreAskedToStop) {
  // Fail fast: once `fail` (first in program order) has thrown, an op after it that had
  // started is asked to stop, and one that had not never starts. The call returns once the
  // started ones end (a call without a deadline leaves nothing running behind it).
  invocation_counter later_runs;
  std::atomic<int> slow_started{0}, slow_finished{0}, slow_stopped{0};
  auto fail = xcs::op("fail", [](int id) -> int {
    sleep_ms(20);
    throw_failure(id);
  });
  // After `fail` in program order, but independent of it: it may start before `fail` throws.
  auto slow = xcs::op("slow", [&](int v, std::stop_token stop) {
    ++slow_started;
    for (int i = 0; i < 400 && !stop.stop_requested(); ++i) sleep_ms(1);
    if (stop.stop_requested()) ++slow_stopped;
    ++slow_finished;
    return v;
  });
  auto later = xcs::op("later", [&](int v) {
    later_runs.hit();
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) {
    auto x = fail(a);
    auto y = slow(b);
    auto z = later(y);  // can only start once slow ends, long after `fail` threw
    return x + z;
  });
  for (int call = 0; call < 3; ++call) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      f(3, 4);
      ADD_FAILURE() << "expected op_failure";
    } catch (const op_failure& e) {
      EXPECT_EQ(e.id, 3);
      EXPECT_EQ(e.origin, &e);
    }
    // Generous: the call returns long before `slow` would have ended on its own (400 ms).
    EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::milliseconds(300));
    EXPECT_EQ(slow_finished.load(), slow_started.load()) << "returned while an op ran";
  }
  EXPECT_EQ(slow_stopped.load(), slow_started.load()) << "a started op was not asked to stop";
  EXPECT_EQ(later_runs.count(), 0) << "an op after the throwing one was started";
}

TEST(PlanTest, OpsDependingOnAFailedOpNeverRun) {
  invocation_counter tail_runs;
  auto fail = xcs::op("fail", [](int id) -> int {
    sleep_ms(5);
    throw_failure(id);
  });
  auto tail = xcs::op("tail", [&](int v) {
    tail_runs.hit();
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) {
    auto x = fail(a);
    auto y = fail(b);
    std::vector<decltype(tail(a))> rest;
    for (int i = 0; i < 8; ++i) rest.push_back(tail(x + y + i));
    return rest;
  });
  EXPECT_THROW(f(1, 2), op_failure);
  EXPECT_EQ(tail_runs.count(), 0);
}

TEST(PlanTest, ACallTooCheapToShareStillStopsAtTheFirstException) {
  // Once its ops are measured cheap, a call runs on its caller in program order
  // (run::run_in_order): the same results and the same exception object, and no op after
  // the thrower runs, not even one that does not depend on it.
  invocation_counter before_runs;
  invocation_counter after_runs;
  auto before = xcs::op("before", [&](int v) {
    before_runs.hit();
    return v + 1;
  });
  auto check = xcs::op("check", [](int v) {
    if (v < 0) throw_failure(v);
    return v;
  });
  auto after = xcs::op("after", [&](int v) {
    after_runs.hit();
    return v * 2;
  });
  auto f = xcs::jit([&](auto a, auto b) {
    auto x = before(a);
    auto y = check(b);
    auto z = after(a);
    return x + y + z;
  });
  for (int i = 0; i < 50; ++i) ASSERT_EQ(f(i, i), (i + 1) + i + 2 * i);
  const int ran_before = before_runs.count();
  const int ran_after = after_runs.count();
  try {
    f(1, -7);
    FAIL() << "expected op_failure";
  } catch (const op_failure& e) {
    EXPECT_EQ(e.id, -7);
    EXPECT_EQ(e.origin, &e) << "the caller got a copy, not the object the op threw";
  }
  EXPECT_EQ(before_runs.count(), ran_before + 1);
  EXPECT_EQ(after_runs.count(), ran_after) << "an op after the thrower ran";
  EXPECT_EQ(f(3, 4), 4 + 4 + 6);
  const xcs::stats st = f.stats();
  EXPECT_EQ(st.fallback_calls, 0u);
  const auto check_stats = std::find_if(st.ops.begin(), st.ops.end(),
                                        [](const xcs::op_stats& o) { return o.name == "check"; });
  ASSERT_NE(check_stats, st.ops.end());
  EXPECT_EQ(check_stats->errors, 1u);
}

// ---- analysis ----------------------------------------------------------------------------

TEST(PlanTest, AnalysisReportsGroupsWidestGroupAndCriticalPath) {
  auto fetch = xcs::op("fetch", [](int v) { return v; });
  auto merge = xcs::op("merge", [](int a, int b) { return a + b; });
  auto f = xcs::jit([&](auto a, auto b, auto c, auto d) {
    return merge(merge(fetch(a), fetch(b)), merge(fetch(c), fetch(d)));
  });
  EXPECT_EQ(f(1, 2, 3, 4), 10);
  auto st = f.stats();
  EXPECT_EQ(st.nodes, 7u);
  EXPECT_EQ(st.parallel_groups, 3u);
  EXPECT_EQ(st.max_parallelism, 4u);
  EXPECT_EQ(st.critical_path, 3u);
  EXPECT_DOUBLE_EQ(st.estimated_speedup, 7.0 / 3.0);
  std::string report = f.explain(1, 2, 3, 4);
  EXPECT_THAT(report, HasSubstr("critical path:"));
  EXPECT_THAT(report, HasSubstr("cached: yes"));
}

}  // namespace
