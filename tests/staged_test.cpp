// SPDX-License-Identifier: MIT
// Staged execution: bodies that read their values keep their parallelism, run every op
// exactly once, and return and throw what the direct call does.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <numeric>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "xcs/xcs.hpp"

namespace {

using ::testing::HasSubstr;

using xcs_test::concurrency_meter;
using xcs_test::invocation_counter;

void nap(int ms) { xcs_test::sleep_ms(ms); }

TEST(StagedTest, BranchOnAJudgeRunsCandidatesAtOnceAndMatchesTheDirectCall) {
  concurrency_meter m;
  invocation_counter gen_runs;
  auto gen = xcs::op(
      "gen",
      [&](int q, int k) {
        gen_runs.hit();
        concurrency_meter::guard g(m);
        nap(30);
        return q * 10 + k;
      },
      xcs::blocking);
  auto judge = xcs::op("judge", [](int a, int b, int c) { return (a + b + c) % 10; });
  auto synth = xcs::op("synth", [](int a, int b) { return a + b; });
  auto body = [&](auto q) {
    auto a = gen(q, 1), b = gen(q, 2), c = gen(q, 3);
    if (judge(a, b, c) >= 5) return synth(a, b);
    return synth(synth(gen(q, 4), gen(q, 5)), c);
  };
  auto f = xcs::jit(body);
  for (int q : {1, 2, 3, 4}) {
    int runs_before = gen_runs.count();
    int got = f(q);
    int jitted_runs = gen_runs.count() - runs_before;
    int want = body(q);
    EXPECT_EQ(got, want) << q;
    EXPECT_EQ(jitted_runs, gen_runs.count() - runs_before - jitted_runs) << "each op exactly once";
  }
  EXPECT_GE(m.max(), 3) << "the three candidates overlap";
  auto st = f.stats();
  EXPECT_EQ(st.staged_calls, 4u);
  EXPECT_EQ(st.fallback_calls, 0u);
  EXPECT_EQ(st.traces, 1u);
  EXPECT_GE(st.syncs, 4u);
}

TEST(StagedTest, TheBodyRunsOncePerCallAndEachOpOnce) {
  std::atomic<int> body_runs{0}, op_runs{0};
  auto inc = xcs::op("inc", [&](int v) {
    ++op_runs;
    return v + 1;
  });
  auto f = xcs::jit([&](auto a, auto b) {
    ++body_runs;
    auto x = inc(a), y = inc(b);
    int total = 0;
    while (x < 5) {  // a data-dependent trip count
      x = inc(x);
      ++total;
    }
    return x + y + total;
  });
  EXPECT_EQ(f(0, 0), 5 + 1 + 4);
  EXPECT_EQ(body_runs.load(), 1) << "the first call too runs the body once";
  EXPECT_EQ(op_runs.load(), 2 + 4);
  EXPECT_EQ(f(3, 1), 5 + 2 + 1);
  EXPECT_EQ(body_runs.load(), 2);
  EXPECT_EQ(op_runs.load(), 6 + 2 + 1);
}

struct slow_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};
struct quick_error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

TEST(StagedTest, AReadThrowsTheFirstThrowerInProgramOrder) {
  auto slow = xcs::op(
      "slow",
      [](int) -> int {
        nap(40);
        throw slow_error("slow");
      },
      xcs::blocking);
  auto quick = xcs::op("quick", [](int) -> int { throw quick_error("quick"); });
  auto f = xcs::jit([&](auto a) {
    auto s = slow(a);   // first in program order, throws late
    auto q = quick(a);  // throws at once
    if (q > 0) return s;
    return q;
  });
  for (int i = 0; i < 2; ++i) {
    try {
      (void)f(1);
      ADD_FAILURE() << "no exception";
    } catch (const slow_error& e) {
      EXPECT_STREQ(e.what(), "slow");
    } catch (const std::exception& e) {
      ADD_FAILURE() << "threw " << e.what() << " instead of the earlier op's exception";
    }
  }
  EXPECT_EQ(f.stats().staged_calls, 2u);
}

TEST(StagedTest, TryCatchInTheBodySeesTheOpsExceptionAsTheDirectCallDoes) {
  auto parse = xcs::op("parse", [](int v) -> int {
    if (v < 0) throw std::invalid_argument("negative");
    return v * 2;
  });
  auto body = [&](auto a, auto b) {
    int first = 0;
    try {
      auto x = parse(a);
      first = x;  // the read
    } catch (const std::invalid_argument& e) {
      first = -100;
    }
    return parse(b) + first;
  };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(3, 4), body(3, 4));
  EXPECT_EQ(f(-3, 4), body(-3, 4));
  EXPECT_THROW(f(3, -4), std::invalid_argument);
  EXPECT_EQ(f.stats().fallback_calls, 0u);
}

TEST(StagedTest, AnExceptionNoReadNeedsSurfacesAtTheEnd) {
  auto bad = xcs::op("bad", [](int) -> int { throw quick_error("unread"); });
  auto id = xcs::op("id", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) {
    auto unused = bad(a);
    (void)unused;
    if (id(a) > 0) return id(a) + 1;
    return id(a);
  });
  EXPECT_THROW(f(1), quick_error);
  EXPECT_THROW(f(1), quick_error);
}

TEST(StagedTest, LoopingOverAReturnedVectorKeepsItsElementsTraced) {
  concurrency_meter m;
  auto list =
      xcs::op("list", [](int n) { return std::vector<int>(static_cast<std::size_t>(n), 7); });
  auto summarize = xcs::op(
      "summarize",
      [&](int v) {
        concurrency_meter::guard g(m);
        nap(20);
        return v + 1;
      },
      xcs::blocking);
  auto body = [&](auto n) {
    auto items = list(n);
    std::vector<decltype(summarize(items[0]))> out;
    for (const auto& it : items) out.push_back(summarize(it));  // size() is a read
    return out;
  };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(4), (std::vector<int>{8, 8, 8, 8}));
  EXPECT_EQ(f(2), (std::vector<int>{8, 8}));
  EXPECT_GE(m.max(), 2) << "the elements are summarized at the same time";
  EXPECT_EQ(f.stats().staged_calls, 2u);
}

TEST(StagedTest, NestedBothWaysAndManyThreads) {
  auto inc = xcs::op("inc", [](int v) { return v + 1; });
  auto inner = xcs::jit([&](auto a) {
    if (inc(a) > 10) return inc(a) * 2;
    return inc(a);
  });
  // A staged function called with traced values inside a staged body records into it.
  auto outer = xcs::jit([&](auto a, auto b) {
    auto x = inner(a);
    if (x > 5) return x + inner(b);
    return x;
  });
  EXPECT_EQ(outer(20, 1), 42 + 2);
  // A staged function called inside the ops of a plan.
  auto via_op = xcs::op("via", [&](int v) { return inner(v); });
  auto plan = xcs::jit([&](auto a, auto b) { return via_op(a) + via_op(b); });
  EXPECT_EQ(plan(20, 1), 42 + 2);
  // Eight threads on one staged function.
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 50; ++i) {
        int want_x = t + i + 1 > 10 ? (t + i + 1) * 2 : t + i + 1;
        int want = want_x > 5 ? want_x + (i + 1 > 10 ? (i + 1) * 2 : i + 1) : want_x;
        if (outer(t + i, i) != want) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

TEST(StagedTest, ExplainRunsNoOpAndNamesTheRead) {
  std::atomic<int> runs{0};
  auto id = xcs::op("id", [&](int v) {
    ++runs;
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) {
    auto x = id(a), y = id(b);
    if (x > y) return x;
    return y;
  });
  std::string e = f.explain(1, 2);
  EXPECT_EQ(runs.load(), 0);
  EXPECT_THAT(e, HasSubstr("staged"));
  EXPECT_THAT(e, HasSubstr("operator '>'"));
  EXPECT_THAT(e, HasSubstr("%1 = id"));
}

}  // namespace
