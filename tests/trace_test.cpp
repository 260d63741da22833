// SPDX-License-Identifier: MIT
// Tracing: jitted calls return what the direct call returns, ops never run at trace time, and
// bodies that cannot be traced fall back with a reason.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <array>
#include <cstdint>
#include <mutex>
#include <numeric>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "test_support.hpp"
#include "xcs/detail/pipeline.hpp"

namespace {

using ::testing::HasSubstr;
using xcs_test::invocation_counter;

// ---- semantic preservation ---------------------------------------------------------------

TEST(TraceTest, ScalarResultEqualsDirectCall) {
  auto twice = xcs::op("twice", [](int v) { return 2 * v; });
  auto add = xcs::op("add", [](int a, int b) { return a + b; });
  auto body = [&](auto x, auto y) { return add(twice(x), twice(y)); };
  auto f = xcs::jit(body);
  for (int i = -3; i < 4; ++i) EXPECT_EQ(f(i, 10 * i + 1), body(i, 10 * i + 1));
  auto st = f.stats();
  EXPECT_TRUE(st.optimized);
  EXPECT_EQ(st.fallback_calls, 0u) << st.fallback_reason;
  EXPECT_EQ(st.traces, 1u);
}

TEST(TraceTest, StringsAndStringPlusEqualDirectCall) {
  auto upper = xcs::op("upper", [](const std::string& s) {
    std::string r = s;
    for (char& c : r) c = static_cast<char>(c >= 'a' && c <= 'z' ? c - 32 : c);
    return r;
  });
  auto body = [&](auto a, auto b) {
    auto x = upper(a);
    auto y = upper(b);
    // traced + literal, literal + traced, traced + traced, traced + std::string.
    return "<" + x + "|" + y + std::string(">");
  };
  auto f = xcs::jit(body);
  std::string a = "hello", b = "world";
  std::string got = f(a, b);
  EXPECT_EQ(got, body(a, b));
  EXPECT_EQ(got, "<HELLO|WORLD>");
  EXPECT_EQ(f(std::string("ab"), std::string("")), "<AB|>");
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, TupleAndPairResultsEqualDirectCall) {
  auto len = xcs::op("len", [](const std::string& s) { return s.size(); });
  auto echo = xcs::op("echo", [](const std::string& s) { return s + s; });
  auto body = [&](auto a, auto b) {
    auto la = len(a);
    auto lb = len(b);
    return std::make_tuple(echo(a), std::make_pair(la, lb), 7, std::string("plain"));
  };
  auto f = xcs::jit(body);
  std::tuple<std::string, std::pair<std::size_t, std::size_t>, int, std::string> got =
      f(std::string("ab"), std::string("xyz"));
  EXPECT_EQ(got, body(std::string("ab"), std::string("xyz")));
  EXPECT_EQ(std::get<0>(got), "abab");
  EXPECT_EQ(std::get<1>(got), std::make_pair(std::size_t{2}, std::size_t{3}));
  EXPECT_EQ(std::get<2>(got), 7);
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, VectorArgumentAndResultEqualDirectCall) {
  auto square = xcs::op("square", [](int v) { return v * v; });
  auto body = [&](const auto& items) {
    std::vector<decltype(square(items[0]))> out;
    for (const auto& it : items) out.push_back(square(it));
    return out;
  };
  auto f = xcs::jit(body);
  std::vector<int> in = {1, -2, 3, 4, 5};
  std::vector<int> got = f(in);
  EXPECT_EQ(got, body(in));
  EXPECT_EQ(got, (std::vector<int>{1, 4, 9, 16, 25}));
  // Same size, other values: the cached plan reads the new values.
  EXPECT_EQ(f(std::vector<int>{0, 1, 2, 3, 4}), (std::vector<int>{0, 1, 4, 9, 16}));
  EXPECT_EQ(f.stats().traces, 1u);
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, ArrayArgumentAndResultEqualDirectCall) {
  auto inc = xcs::op("inc", [](double v) { return v + 1.0; });
  auto body = [&](const auto& a) {
    return std::array{inc(a[0]), inc(a[1]), inc(a[2]), a.size() * 1.0 + inc(a[3])};
  };
  auto f = xcs::jit(body);
  std::array<double, 4> in = {0.5, 1.5, 2.5, 3.5};
  std::array<double, 4> got = f(in);
  EXPECT_EQ(got, body(in));
  EXPECT_EQ(got, (std::array<double, 4>{1.5, 2.5, 3.5, 8.5}));
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, NestedContainersEqualDirectCall) {
  auto neg = xcs::op("neg", [](int v) { return -v; });
  auto body = [&](const auto& rows, auto tag) {
    using cell = decltype(neg(rows[0][0]));
    std::vector<std::vector<cell>> out;
    for (const auto& row : rows) {
      std::vector<cell> r;
      for (const auto& v : row) r.push_back(neg(v));
      out.push_back(r);
    }
    return std::make_pair(out, tag + std::string("!"));
  };
  auto f = xcs::jit(body);
  std::vector<std::vector<int>> in = {{1, 2, 3}, {}, {4}, {5, 6}};
  std::pair<std::vector<std::vector<int>>, std::string> got = f(in, std::string("t"));
  EXPECT_EQ(got, body(in, std::string("t")));
  EXPECT_EQ(got.first, (std::vector<std::vector<int>>{{-1, -2, -3}, {}, {-4}, {-5, -6}}));
  EXPECT_EQ(got.second, "t!");
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, PlainValueReturnWithVoidOpsRunsTheOps) {
  std::mutex m;
  std::multiset<int> seen;
  auto record = xcs::op("record", [&](int v) {
    std::lock_guard lock(m);
    seen.insert(v);
  });
  auto body = [&](auto a, auto b) {
    record(a);
    record(b);
    return 42;
  };
  auto f = xcs::jit(body);
  int got = f(1, 2);
  EXPECT_EQ(got, 42);
  EXPECT_EQ(seen, (std::multiset<int>{1, 2}));
  EXPECT_EQ(f(3, 4), 42);
  EXPECT_EQ(seen, (std::multiset<int>{1, 2, 3, 4}));
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, VoidBodyRunsVoidOps) {
  std::atomic<int> sum{0};
  auto add_to_sum = xcs::op("add_to_sum", [&](int v) { sum += v; });
  auto body = [&](auto a, auto b, auto c) {
    add_to_sum(a);
    add_to_sum(b);
    add_to_sum(c);
  };
  auto f = xcs::jit(body);
  static_assert(std::is_void_v<decltype(f(1, 2, 3))>);
  f(1, 2, 3);
  EXPECT_EQ(sum.load(), 6);
  f(10, 20, 30);
  EXPECT_EQ(sum.load(), 66);
  EXPECT_TRUE(f.stats().optimized);
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, OperatorsWithMixedPlainAndTracedOperands) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto body = [&](auto x, auto y) {
    auto a = id(x);
    auto b = id(y);
    return std::make_tuple(a + b, a - 3, 100 - b, a * b, 2 * a, a / 2, 17 / b, a % 3, 50 % b, -a,
                           a == b, a != 7, a<b, 3 <= b, a> 2, b >= 9, a + 0.5);
  };
  auto f = xcs::jit(body);
  for (auto [x, y] : {std::pair{7, 9}, std::pair{-4, 3}, std::pair{9, 9}}) {
    EXPECT_EQ(f(x, y), body(x, y)) << x << ", " << y;
  }
  EXPECT_EQ(f.stats().traces, 1u);
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, CompoundAssignmentOnTracedValues) {
  auto id = xcs::op("id", [](long v) { return v; });
  auto body = [&](auto x, auto y) {
    auto a = id(x);
    auto b = id(y);
    a += b;
    a *= 3;
    a -= 1;
    a /= 2;
    a %= 1000;
    return a;
  };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(5L, 8L), body(5L, 8L));
  EXPECT_EQ(f(123L, 456L), body(123L, 456L));
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, VectorOfTracedPassedToOpBecomesPack) {
  auto square = xcs::op("square", [](int v) { return v * v; });
  auto total = xcs::op(
      "total", [](const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); });
  auto body = [&](const auto& items) {
    std::vector<decltype(square(items[0]))> out;
    for (const auto& it : items) out.push_back(square(it));
    return std::make_pair(total(out), out.size());
  };
  auto f = xcs::jit(body);
  std::vector<int> in = {1, 2, 3, 4};
  EXPECT_EQ(f(in), body(in));
  EXPECT_EQ(f(in).first, 30);
  EXPECT_EQ(f(std::vector<int>{5, 5, 5, 5}).first, 100);
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, GridWavefrontEqualsDirectCall) {
  constexpr int n = 6;
  auto combine = xcs::op("combine", [](std::int64_t up, std::int64_t left) {
    return (up * 31 + left * 17 + 1) % 1000003;
  });
  auto body = [&](auto seed) {
    using cell = decltype(combine(seed, seed));
    std::vector<std::vector<cell>> g;
    for (int i = 0; i < n; ++i) {
      std::vector<cell> row;
      for (int j = 0; j < n; ++j) {
        if (i == 0 && j == 0) {
          row.push_back(combine(seed, seed));
        } else if (i == 0) {
          row.push_back(combine(seed, row[j - 1]));
        } else if (j == 0) {
          row.push_back(combine(g[i - 1][0], seed));
        } else {
          row.push_back(combine(g[i - 1][j], row[j - 1]));
        }
      }
      g.push_back(row);
    }
    return g;
  };
  auto f = xcs::jit(body);
  for (std::int64_t seed : {1, 2, 99}) EXPECT_EQ(f(seed), body(seed)) << seed;
  auto st = f.stats();
  EXPECT_EQ(st.fallback_calls, 0u) << st.fallback_reason;
  EXPECT_EQ(st.nodes, std::size_t{n * n});
  EXPECT_EQ(st.max_parallelism, std::size_t{n});        // the longest anti-diagonal
  EXPECT_EQ(st.critical_path, std::size_t{2 * n - 1});  // corner to corner
  EXPECT_EQ(st.parallel_groups, std::size_t{2 * n - 1});
}

TEST(TraceTest, PlainArgumentsPassedAlongsideTracedOnesBecomeConstants) {
  auto scale = xcs::op(
      "scale", [](int v, int k, const std::string& unit) { return std::to_string(v * k) + unit; });
  auto body = [&](auto a, auto b) {
    std::string unit = "ms";  // computed at trace time, a constant of the plan
    return std::make_pair(scale(a, 10, unit), scale(b, 3, "s"));
  };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(1, 2), body(1, 2));
  EXPECT_EQ(f(4, 5), (std::pair<std::string, std::string>{"40ms", "15s"}));
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(TraceTest, JittedFunctionCalledOnTracedValuesIsInlined) {
  auto inc = xcs::op("inc", [](int v) { return v + 1; });
  auto inner = xcs::jit([&](auto a, auto b) { return std::make_pair(inc(a), inc(b)); });
  auto outer = xcs::jit([&](auto a, auto b) {
    auto [p, q] = inner(inc(a), inc(b));
    return p * q;
  });
  EXPECT_EQ(outer(1, 2), 3 * 4);
  EXPECT_EQ(outer(5, 6), 7 * 8);
  EXPECT_EQ(outer.stats().fallback_calls, 0u) << outer.stats().fallback_reason;
  EXPECT_EQ(outer.stats().nodes, 5u);
}

// ---- trace-time behaviour ----------------------------------------------------------------

TEST(TraceTest, OpsNeverRunAtTraceTime) {
  invocation_counter runs;
  auto work = xcs::op("work", [&](int v) {
    runs.hit();
    return v;
  });
  auto body = [&](auto a, auto b) { return work(a) + work(b); };
  auto f = xcs::jit(body);
  std::string report = f.explain(1, 2);
  EXPECT_EQ(runs.count(), 0) << "explain() ran an op";
  std::string dot = f.dot(1, 2);
  EXPECT_EQ(runs.count(), 0) << "dot() ran an op";
  EXPECT_EQ(f(1, 2), 3);
  EXPECT_EQ(runs.count(), 2) << "the first call (trace + run) must run each op exactly once";
  EXPECT_EQ(f(3, 4), 7);
  EXPECT_EQ(runs.count(), 4);
}

TEST(TraceTest, BodyCodeOutsideOpsRunsAtTraceTimeOnly) {
  invocation_counter body_runs;
  auto work = xcs::op("work", [](int v) { return v * 3; });
  auto f = xcs::jit([&](auto a, auto b) {
    body_runs.hit();
    return work(a) + work(b);
  });
  for (int i = 0; i < 5; ++i) EXPECT_EQ(f(i, 1), 3 * i + 3);
  EXPECT_EQ(body_runs.count(), 1);
}

TEST(TraceTest, ExplainListsNodesAndRunsNoOp) {
  invocation_counter runs;
  auto summarize = xcs::op("summarize", [&](const std::string& s) {
    runs.hit();
    return s;
  });
  auto score = xcs::op("score", [&](const std::string& a, const std::string& b) {
    runs.hit();
    return a.size() + b.size();
  });
  auto f = xcs::jit([&](auto a, auto b) { return score(summarize(a), summarize(b)); });
  std::string report = f.explain(std::string("x"), std::string("y"));
  EXPECT_EQ(runs.count(), 0);
  EXPECT_THAT(report, HasSubstr("summarize"));
  EXPECT_THAT(report, HasSubstr("score"));
  EXPECT_THAT(report, HasSubstr("nodes: 3"));
  EXPECT_THAT(report, HasSubstr("max parallelism: 2"));
  EXPECT_THAT(report, HasSubstr("cached: no"));
  // explain() does not fill the cache.
  EXPECT_EQ(f.stats().traces, 0u);
  EXPECT_EQ(f.stats().cache_entries, 0u);
}

TEST(TraceTest, ExplainSpellsTypesAsTheyAreWritten) {
  auto sum =
      xcs::op("sum", [](std::span<const int> s) { return std::accumulate(s.begin(), s.end(), 0); });
  auto f = xcs::jit([&](auto a, auto b) { return sum(a) + sum(b); });
  const std::vector<int> v{1, 2, 3};
  const std::span<const int> s(v);
  EXPECT_EQ(f(s, s), 12);
  std::string report = f.explain(s, s);
  EXPECT_THAT(report, HasSubstr("signature: (std::span<const int>, std::span<const int>)"))
      << report;
  EXPECT_THAT(report, HasSubstr("= sum(arg0) -> int")) << report;
  // const goes first, as written; a const pointer keeps its const after the `*`.
  using xcs::detail::graph;
  EXPECT_EQ(graph::type_name(typeid(std::span<const std::string>)), "std::span<const std::string>");
  EXPECT_EQ(graph::type_name(typeid(std::span<int, 4>)), "std::span<int, 4ul>");
  EXPECT_EQ(graph::type_name(typeid(const char*)), "const char*");
  EXPECT_EQ(graph::type_name(typeid(const char* const*)), "const char* const*");
  EXPECT_EQ(graph::type_name(typeid(std::vector<const unsigned long*>)),
            "std::vector<const unsigned long*>");
  EXPECT_EQ(graph::type_name(typeid(std::pair<const std::vector<int>, int>)),
            "std::pair<const std::vector<int>, int>");
}

TEST(TraceTest, DotYieldsGraphviz) {
  invocation_counter runs;
  auto fetch = xcs::op("fetch", [&](int v) {
    runs.hit();
    return v;
  });
  auto merge = xcs::op("merge", [&](int a, int b) {
    runs.hit();
    return a + b;
  });
  auto f = xcs::jit([&](auto a, auto b) { return merge(fetch(a), fetch(b)); });
  std::string dot = f.dot(1, 2);
  EXPECT_EQ(runs.count(), 0);
  EXPECT_THAT(dot, HasSubstr("digraph"));
  EXPECT_THAT(dot, HasSubstr("fetch"));
  EXPECT_THAT(dot, HasSubstr("merge"));
  EXPECT_THAT(dot, HasSubstr("->"));
  EXPECT_EQ(dot.find('{') != std::string::npos, true);
  EXPECT_EQ(dot.back() == '\n' || dot.back() == '}', true);
}

TEST(TraceTest, DotOfFallbackSaysWhy) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) {
    auto x = id(a);
    return id(x);
  });
  std::string dot = f.dot(1);
  EXPECT_THAT(dot, HasSubstr("digraph"));
  EXPECT_THAT(dot, HasSubstr("no independent ops"));
}

// ---- fallback ----------------------------------------------------------------------------

TEST(FallbackTest, BodyThrowingAtTraceTimeThrowsLikeTheDirectCall) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto body = [&](const auto& items) {
    if (items.size() == 0) throw std::invalid_argument("no items");
    std::vector<decltype(id(items[0]))> out;
    for (const auto& it : items) out.push_back(id(it));
    return out;
  };
  auto f = xcs::jit(body);
  EXPECT_THROW(body(std::vector<int>{}), std::invalid_argument);
  try {
    f(std::vector<int>{});
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "no items");
  }
  EXPECT_THAT(f.stats().fallback_reason, HasSubstr("no items"));
  // Another signature of the same function still gets a plan.
  EXPECT_EQ(f(std::vector<int>{1, 2, 3}), (std::vector<int>{1, 2, 3}));
  EXPECT_TRUE(f.stats().optimized);
}

TEST(FallbackTest, ChainWithoutIndependentOpsFallsBackWithReason) {
  invocation_counter runs;
  auto step = xcs::op("step", [&](int v) {
    runs.hit();
    return v * 2 + 1;
  });
  auto body = [&](auto a) { return step(step(step(a))); };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(1), 15);
  EXPECT_EQ(f(0), 7);
  EXPECT_EQ(runs.count(), 6);
  auto st = f.stats();
  EXPECT_FALSE(st.optimized);
  EXPECT_EQ(st.fallback_calls, 2u);
  EXPECT_EQ(st.traces, 1u);
  EXPECT_THAT(st.fallback_reason, HasSubstr("no independent ops"));
}

TEST(TraceTest, StringLiteralArgumentsArePassedAsPointers) {
  auto shout = xcs::op("shout", [](const std::string& s) { return s + "!"; });
  auto body = [&](auto a, auto b) { return shout(a) + shout(b); };
  auto f = xcs::jit(body);
  EXPECT_EQ(f("hello", "world"), body("hello", "world"));
  const char* p = "abc";
  EXPECT_EQ(f(p, "x"), "abc!x!");
  EXPECT_TRUE(f.stats().optimized);
  EXPECT_THAT(f.explain("a", "b"), HasSubstr("shout"));
}

}  // namespace
