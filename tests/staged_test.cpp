// SPDX-License-Identifier: MIT
// Staged execution: bodies that read their values keep their parallelism, run every op
// exactly once, return and throw what the direct call does, and say which read (and source
// line) made them staged.
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
using ::testing::Not;

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

// A staged signature's calls reuse the buffers of its trace (the graph's vectors, the
// result's recipe): calls of different sizes, each with its own constants, from several threads
// at once, and calls that throw, each return or throw what the direct call does.
TEST(StagedTest, CallsThatReuseTheTraceBuffersKeepTheirOwnValues) {
  auto len = xcs::op("len", [](const std::string& s) { return static_cast<int>(s.size()); });
  auto tag = xcs::op("tag", [](const std::string& s, int i) {
    if (i == 13) throw std::runtime_error("thirteen");
    return s + "#" + std::to_string(i);
  });
  auto body = [&](auto word) {
    auto acc = tag(word, 0);
    for (int i = 1; i < len(word); ++i) acc = tag(acc, i);  // a read per turn: staged
    return acc;
  };
  auto f = xcs::jit(body);
  // What the direct call gives: its result, or its exception's message.
  auto expect = [&](const std::string& w) {
    try {
      return body(w);
    } catch (const std::runtime_error& e) {
      return std::string("threw ") + e.what();
    }
  };
  auto got = [&](const std::string& w) {
    try {
      return f(w);
    } catch (const std::runtime_error& e) {
      return std::string("threw ") + e.what();
    }
  };
  std::vector<std::thread> threads;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        const std::string w(static_cast<std::size_t>(1 + (i * 7 + t) % 20), 'a' + t);
        if (got(w) != expect(w)) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(got("xyz"), "xyz#0#1#2");
  EXPECT_EQ(got(std::string(14, 'q')), "threw thirteen");
  EXPECT_EQ(got("q"), "q#0");
  EXPECT_GE(f.stats().staged_calls, 400u);
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

int plain_twice(int v) { return 2 * v; }

TEST(StagedTest, IfOnTracedValueRunsStagedWithCorrectResult) {
  invocation_counter runs;
  auto id = xcs::op("id", [&](int v) {
    runs.hit();
    return v;
  });
  auto body = [&](auto a, auto b) {
    auto x = id(a);
    auto y = id(b);
    if (x > y) return x - y;
    return y - x;
  };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(10, 3), 7);
  EXPECT_EQ(runs.count(), 2) << "each op runs exactly once, the first call included";
  EXPECT_EQ(f(3, 10), 7);
  EXPECT_EQ(f(-1, -1), 0);
  EXPECT_EQ(runs.count(), 6);
  auto st = f.stats();
  EXPECT_TRUE(st.optimized);
  EXPECT_EQ(st.traces, 1u) << "staged is remembered per signature";
  EXPECT_EQ(st.calls, 3u);
  EXPECT_EQ(st.staged_calls, 3u);
  EXPECT_EQ(st.fallback_calls, 0u);
  EXPECT_GE(st.syncs, 1u);
  EXPECT_THAT(st.staged_reason, HasSubstr("operator '>'"));
}

TEST(StagedTest, ConversionToPlainTypeRunsStaged) {
  auto id = xcs::op("lookup", [](int v) { return v + 1; });
  auto body = [&](auto a, auto b) {
    int x = id(a);  // reads the value
    return id(b) + x;
  };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(1, 2), body(1, 2));
  EXPECT_EQ(f(5, 5), 12);
  auto st = f.stats();
  EXPECT_EQ(st.staged_calls, 2u);
  EXPECT_EQ(st.fallback_calls, 0u);
  EXPECT_EQ(st.traces, 1u);
  EXPECT_THAT(st.staged_reason, HasSubstr("lookup"));
}

TEST(StagedTest, PassingTracedValueToPlainFunctionRunsStaged) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto body = [&](auto a, auto b) { return id(a) + plain_twice(id(b)); };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(1, 2), 5);
  EXPECT_EQ(f.stats().staged_calls, 1u);
  EXPECT_FALSE(f.stats().staged_reason.empty());
}

// The contract asks the reason to name the argument where it can: `b > 0` depends on argument
// 1 alone, so the reason should say so, not only "the result of op '>'".
TEST(StagedTest, ReadingAnArgumentNamesIt) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto f = xcs::jit([&](auto a, auto b) {
    if (b > 0) return id(a) + id(b);
    return id(a) - id(b);
  });
  EXPECT_EQ(f(1, 2), 3);
  EXPECT_EQ(f(1, -2), 3);
  EXPECT_THAT(f.stats().staged_reason, HasSubstr("argument 1"));
}

TEST(StagedTest, CallableTakingPlainTypesFallsBack) {
  invocation_counter runs;
  auto id = xcs::op("id", [&](int v) {
    runs.hit();
    return v;
  });
  auto body = [&](int a, int b) { return id(a) * id(b); };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(6, 7), 42);
  EXPECT_EQ(f(2, 3), 6);
  EXPECT_EQ(runs.count(), 4);  // each op once per call, the first call included
  auto st = f.stats();
  // Taking `int` converts each traced argument at entry: every op runs in place, so nothing
  // can run at the same time. The first call finds it out; the signature then falls back.
  EXPECT_FALSE(st.optimized);
  EXPECT_EQ(st.staged_calls, 0u);
  EXPECT_EQ(st.fallback_calls, 2u);
  EXPECT_EQ(st.traces, 1u);
  EXPECT_THAT(st.fallback_reason, HasSubstr("plain types (int, int)"));
  EXPECT_THAT(st.fallback_reason, HasSubstr("write `auto` parameters"));
}

TEST(StagedTest, OpCalledWithOnlyPlainArgumentsRunsInPlace) {
  invocation_counter runs;
  auto get = xcs::op("get", [&](int v) {
    runs.hit();
    return v * 10;
  });
  auto body = [&](auto a) { return get(a) + get(5); };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(1), 60);
  EXPECT_EQ(runs.count(), 2) << "get(5) runs once, in place, as in the direct call";
  EXPECT_EQ(f(2), 70);
  EXPECT_EQ(runs.count(), 4);
  EXPECT_EQ(f.stats().staged_calls, 2u);
  EXPECT_THAT(f.stats().staged_reason, HasSubstr("'get'"));
}

TEST(StagedTest, CatchAllAroundAReadGetsTheValue) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto body = [&](auto a, auto b) {
    auto x = id(a);
    auto y = id(b);
    int bonus = 0;
    try {
      if (x > y) bonus = 1;
    } catch (...) {
      // swallows whatever happens
    }
    return x + y + bonus;
  };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(5, 1), 7);
  EXPECT_EQ(f(1, 5), 6);
  EXPECT_EQ(f.stats().staged_calls, 2u) << "a plan would always return bonus 0";
}

TEST(StagedTest, OnlyTheReadingSignatureRunsStaged) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto f = xcs::jit([&](const auto& items) {
    std::vector<decltype(id(items[0]))> out;
    for (const auto& it : items) out.push_back(id(it));
    if (items.size() == 1) {
      int v = out[0];  // reads a value: this signature runs staged
      (void)v;
    }
    return out;
  });
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(f(std::vector<int>{7}), (std::vector<int>{7}));
    EXPECT_EQ(f(std::vector<int>{1, 2}), (std::vector<int>{1, 2}));
  }
  auto st = f.stats();
  EXPECT_TRUE(st.optimized);
  EXPECT_EQ(st.traces, 2u);
  EXPECT_EQ(st.calls, 6u);
  EXPECT_EQ(st.staged_calls, 3u);
  EXPECT_EQ(st.plan_runs, 3u);
  EXPECT_FALSE(st.staged_reason.empty());
}

TEST(StagedTest, ReasonNamesTheSourceLineOfTheRead) {
  // Where the build can map code addresses to lines (libbacktrace found, debug information
  // on), the reason says which line of the body read the traced value.
  auto twice = xcs::op("twice", [](int v) { return 2 * v; });
  constexpr int read_line = __LINE__ + 2;
  auto f = xcs::jit([&](auto a, auto b) {
    if (twice(a) > twice(b)) return twice(a) + 1;
    return twice(b) + 1;
  });
  EXPECT_EQ(f(3, 2), 7);
  const std::string reason = f.stats().staged_reason;
  EXPECT_THAT(reason, HasSubstr("operator '>'"));
#if defined(XCS_TEST_EXPECT_SOURCE_LINES)
  EXPECT_THAT(reason, HasSubstr("staged_test.cpp:" + std::to_string(read_line))) << reason;
#else
  (void)read_line;
#endif
}

TEST(StagedTest, ReadsInsideTheStandardLibraryOrXcsNameTheBodysLine) {
  // A read inside std::accumulate, inside xcs::map, or in std::invoke converting an argument
  // for a non-generic lambda names the first line outside both libraries.
  auto twice = xcs::op("twice", [](int v) { return 2 * v; });
  auto range =
      xcs::op("range", [](int n) { return std::vector<int>(static_cast<std::size_t>(n), 1); });
  constexpr int accumulate_line = __LINE__ + 2;
  auto sum = xcs::jit([&](const auto& v) {
    return std::accumulate(v.begin(), v.end(), 0,
                           [&](int acc, const auto& x) { return acc + twice(x); });
  });
  EXPECT_EQ(sum(std::vector<int>{1, 2}), 6);
  constexpr int map_line = __LINE__ + 1;
  auto mapped = xcs::jit([&](auto n) { return xcs::map(twice, range(n)); });
  EXPECT_EQ(mapped(2), (std::vector<int>{2, 2}));
  auto plain = xcs::jit([&](int n) { return twice(n); });
  constexpr int call_line = __LINE__ + 1;
  EXPECT_EQ(plain(4), 8);
  const std::string reasons[] = {sum.stats().staged_reason, mapped.stats().staged_reason,
                                 plain.stats().staged_reason};
  for (const std::string& r : reasons) {
    EXPECT_THAT(r, Not(HasSubstr("/c++/"))) << r;
    EXPECT_THAT(r, Not(HasSubstr("include/xcs/"))) << r;
  }
#if defined(XCS_TEST_EXPECT_SOURCE_LINES)
  EXPECT_THAT(reasons[0], HasSubstr("staged_test.cpp:" + std::to_string(accumulate_line)))
      << reasons[0];
  EXPECT_THAT(reasons[1], HasSubstr("staged_test.cpp:" + std::to_string(map_line))) << reasons[1];
  EXPECT_THAT(reasons[2], HasSubstr("staged_test.cpp:" + std::to_string(call_line))) << reasons[2];
#else
  (void)accumulate_line, (void)map_line, (void)call_line;
#endif
}

TEST(StagedTest, SerialReadsAreCountedAndNamed) {
  // Slow enough that a read always finds its value not yet computed.
  auto gen = xcs::op(
      "gen",
      [](int v) {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        return v + 1;
      },
      xcs::blocking);
  // Each result is read right after its op is recorded: nothing else is ever in flight.
  auto serial = xcs::jit([&](const auto& xs) {
    std::vector<int> out;
    for (const auto& x : xs) out.push_back(gen(x));
    return out;
  });
  EXPECT_EQ(serial(std::vector<int>{1, 2, 3}), (std::vector<int>{2, 3, 4}));
  auto st = serial.stats();
  EXPECT_EQ(st.serial_reads, 3u);
  EXPECT_THAT(st.serial_read, HasSubstr("no other op in flight"));
  EXPECT_THAT(st.serial_read, HasSubstr("xcs::map"));
  EXPECT_THAT(serial.explain(std::vector<int>{1, 2, 3}), HasSubstr("serial reads so far: 3"));
  // xcs::map starts every op before any read: no read is serial.
  auto mapped = xcs::jit([&](const auto& xs) { return xcs::map(gen, xs); });
  EXPECT_EQ(mapped(std::vector<int>{1, 2, 3}), (std::vector<int>{2, 3, 4}));
  EXPECT_EQ(mapped.stats().serial_reads, 0u);
  // Three ops recorded before the first read: that read has company.
  auto branchy = xcs::jit([&](auto a, auto b, auto c) {
    auto x = gen(a);
    auto y = gen(b);
    auto z = gen(c);
    if (x > 0) return y + z;
    return z;
  });
  EXPECT_EQ(branchy(1, 2, 3), 7);
  EXPECT_EQ(branchy.stats().serial_reads, 0u);
  EXPECT_EQ(branchy.stats().nodes, 5u);  // three ops, the > that is read, and the +
}

}  // namespace
