// SPDX-License-Identifier: MIT
// Bodies as users write them: destructuring op results, xcs::get, xcs::map over plain and
// traced vectors, each compiled both traced and plain.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <array>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "test_support.hpp"
#include "xcs/xcs.hpp"

namespace {

using ::testing::HasSubstr;
using xcs_test::concurrency_meter;

auto split = xcs::op("split", [](const std::string& s) {
  return std::pair<std::string, int>(s + "!", static_cast<int>(s.size()));
});
auto triple = xcs::op("triple", [](int x) {
  return std::tuple<int, std::string, double>(x, std::to_string(x), x / 2.0);
});
auto three = xcs::op("three", [](int x) { return std::array<int, 3>{x, x + 1, x + 2}; });
auto twice = xcs::op("twice", [](int x) { return 2 * x; });
auto join = xcs::op("join", [](const std::string& a, int n) { return a + std::to_string(n); });

TEST(BodiesTest, StructuredBindingsOnATracedPairTupleAndArrayRecordNoRead) {
  auto body = [](const auto& s, auto x) {
    auto [text, n] = split(s);
    auto [a, str, half] = triple(x);
    const auto& [p, q, r] = three(x);
    return std::make_tuple(join(text, n), str, half, a + p + q + r);
  };
  auto g = xcs::jit(body);
  auto expected = std::make_tuple(std::string("hi!2"), std::string("7"), 3.5, 7 + 7 + 8 + 9);
  EXPECT_EQ(body(std::string("hi"), 7), expected);
  EXPECT_EQ(g(std::string("hi"), 7), expected);
  EXPECT_EQ(g(std::string("hi"), 7), expected);
  xcs::stats st = g.stats();
  EXPECT_EQ(st.plan_runs, 2u) << st;
  EXPECT_EQ(st.staged_calls, 0u) << st;
  EXPECT_EQ(st.fallback_calls, 0u) << st;
}

TEST(BodiesTest, GetWorksOnTracedAndPlainValuesAlike) {
  auto body = [](const auto& s, auto x) {
    auto pr = split(s);
    auto arr = three(x);
    return std::make_pair(join(xcs::get<0>(pr), xcs::get<1>(pr)), xcs::get<2>(arr) * 10);
  };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(std::string("ab"), 4), body(std::string("ab"), 4));
  EXPECT_EQ(f(std::string("ab"), 4), std::make_pair(std::string("ab!2"), 60));
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats();
  EXPECT_EQ(f.stats().staged_calls, 0u) << f.stats();
  // On plain values xcs::get is std::get, lvalue or rvalue.
  std::tuple<int, std::string> t{1, "one"};
  xcs::get<1>(t) += "!";
  EXPECT_EQ(std::get<1>(t), "one!");
  EXPECT_EQ(xcs::get<1>(std::pair<int, char>{1, 'c'}), 'c');
  // The node names its index.
  EXPECT_THAT(f.explain(std::string("ab"), 4), HasSubstr("get<1>"));
}

TEST(BodiesTest, DestructuredElementsRunInParallel) {
  concurrency_meter m;
  auto slow = xcs::op("slow", [&](const auto& s) {
    concurrency_meter::guard g(m);
    xcs_test::sleep_ms(40);
    return s + "?";
  });
  auto f = xcs::jit([&](const auto& s) {
    auto [a, n] = split(s);
    auto [b, k] = split(s + "x");
    return join(slow(a), n) + join(slow(b), k);
  });
  EXPECT_EQ(f(std::string("q")), "q!?1qx!?2");
  EXPECT_EQ(m.max(), 2);
}

TEST(BodiesTest, MapOverAPlainVectorIsAPlainLoop) {
  std::vector<int> v{1, 2, 3};
  EXPECT_EQ(xcs::map(twice, v), (std::vector<int>{2, 4, 6}));
  EXPECT_EQ(xcs::map([](int x) { return x + 1; }, std::array<int, 2>{5, 6}),
            (std::vector<int>{6, 7}));
  EXPECT_TRUE(xcs::map(twice, std::vector<int>{}).empty());
}

TEST(BodiesTest, MapOverATracedArgumentRunsEachCallAtOnce) {
  concurrency_meter m;
  xcs_test::invocation_counter calls;
  auto slow = xcs::op("slow", [&](int x) {
    concurrency_meter::guard g(m);
    calls.hit();
    xcs_test::sleep_ms(30);
    return x * 3;
  });
  auto sum = xcs::op("sum", [](const std::vector<int>& v) {
    int s = 0;
    for (int x : v) s += x;
    return s;
  });
  auto f = xcs::jit([&](const auto& items) { return sum(xcs::map(slow, items)); });
  EXPECT_EQ(f(std::vector<int>{1, 2, 3, 4}), 30);
  EXPECT_EQ(calls.count(), 4);
  EXPECT_GE(m.max(), 2);
  xcs::stats st = f.stats();
  EXPECT_EQ(st.plan_runs, 1u) << st;
  // Returning the mapped vector works too.
  auto g = xcs::jit([&](const auto& items) { return xcs::map(slow, items); });
  EXPECT_EQ(g(std::vector<int>{1, 2}), (std::vector<int>{3, 6}));
  EXPECT_EQ(g.stats().fallback_calls, 0u) << g.stats();
}

TEST(BodiesTest, MapOverAnOpsVectorResultReadsOnlyItsSize) {
  concurrency_meter m;
  auto range = xcs::op("range", [](int n) {
    std::vector<int> v(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) v[static_cast<std::size_t>(i)] = i;
    return v;
  });
  auto slow = xcs::op("slow", [&](int x) {
    concurrency_meter::guard g(m);
    xcs_test::sleep_ms(30);
    return x + 100;
  });
  auto f = xcs::jit([&](auto n) { return xcs::map(slow, range(n)); });
  EXPECT_EQ(f(3), (std::vector<int>{100, 101, 102}));
  EXPECT_EQ(f(0), (std::vector<int>{}));
  EXPECT_EQ(f(3), (std::vector<int>{100, 101, 102}));
  EXPECT_GE(m.max(), 2);
  xcs::stats st = f.stats();
  EXPECT_EQ(st.staged_calls, 3u) << st;
  EXPECT_EQ(st.fallback_calls, 0u) << st;
}

TEST(BodiesTest, MapWithAGenericLambdaComposesOps) {
  auto f = xcs::jit([](const auto& items) {
    return xcs::map([](const auto& x) { return twice(twice(x)) + 1; }, items);
  });
  EXPECT_EQ(f(std::vector<int>{1, 2}), (std::vector<int>{5, 9}));
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats();
}

}  // namespace
