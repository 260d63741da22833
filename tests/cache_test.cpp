// SPDX-License-Identifier: MIT
// The plan cache: keyed by argument types and container sizes, never values; bounded, and
// still correct past its bound.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using ::testing::HasSubstr;

auto make_square() {
  return xcs::op("square", [](auto v) { return v * v; });
}

TEST(CacheTest, ThousandDifferentIntsTraceOnce) {
  auto square = make_square();
  auto f = xcs::jit([&](auto a, auto b) { return square(a) + square(b); });
  for (int i = 0; i < 1000; ++i) ASSERT_EQ(f(i, i + 1), i * i + (i + 1) * (i + 1)) << i;
  auto st = f.stats();
  EXPECT_EQ(st.calls, 1000u);
  EXPECT_EQ(st.traces, 1u);
  EXPECT_EQ(st.retraces, 0u);
  EXPECT_EQ(st.cache_entries, 1u);
  EXPECT_EQ(st.plan_runs, 1000u);
  EXPECT_EQ(st.fallback_calls, 0u) << st.fallback_reason;
}

TEST(CacheTest, DifferentStringValuesTraceOnce) {
  auto len = xcs::op("len", [](const std::string& s) { return s.size(); });
  auto f = xcs::jit([&](auto a, auto b) { return len(a) + len(b); });
  for (int i = 0; i < 100; ++i) {
    ASSERT_EQ(f(std::string(i, 'x'), std::string("abc")), static_cast<std::size_t>(i) + 3);
  }
  EXPECT_EQ(f.stats().traces, 1u);
}

auto map_square() {
  return [square = make_square()](const auto& items) {
    std::vector<decltype(square(items[0]))> out;
    for (const auto& it : items) out.push_back(square(it));
    return out;
  };
}

TEST(CacheTest, VectorSizeChangesTheKey) {
  auto f = xcs::jit(map_square());
  EXPECT_EQ(f(std::vector<int>{1, 2}), (std::vector<int>{1, 4}));
  EXPECT_EQ(f(std::vector<int>{1, 2, 3}), (std::vector<int>{1, 4, 9}));
  EXPECT_EQ(f(std::vector<int>{1, 2, 3, 4}), (std::vector<int>{1, 4, 9, 16}));
  EXPECT_EQ(f.stats().traces, 3u);
  // Sizes seen before: no new trace, and each size's plan gives that size's result.
  EXPECT_EQ(f(std::vector<int>{5, 6, 7}), (std::vector<int>{25, 36, 49}));
  EXPECT_EQ(f(std::vector<int>{8, 9}), (std::vector<int>{64, 81}));
  auto st = f.stats();
  EXPECT_EQ(st.traces, 3u);
  EXPECT_EQ(st.retraces, 2u);
  EXPECT_EQ(st.cache_entries, 3u);
  EXPECT_FALSE(st.retrace_reason.empty()) << "stats should say why it retraced";
}

// std::vector<bool> is not traced element by element (it has no element addresses): it is one
// value, like a string, so its size is not part of the key and every size shares one plan.
TEST(CacheTest, VectorOfBoolSizeDoesNotChangeTheKey) {
  auto count = xcs::op("count", [](const std::vector<bool>& v) {
    return static_cast<int>(std::count(v.begin(), v.end(), true));
  });
  auto f = xcs::jit([&](const auto& a, const auto& b) { return count(a) + count(b); });
  for (std::size_t n = 0; n < 6; ++n) {
    std::vector<bool> a(n, true), b(n + 1, false);
    b[0] = true;
    EXPECT_EQ(f(a, b), static_cast<int>(n) + 1) << n;
  }
  auto st = f.stats();
  EXPECT_EQ(st.traces, 1u);
  EXPECT_EQ(st.retraces, 0u);
  EXPECT_EQ(st.plan_runs, 6u);
  EXPECT_THAT(f.explain(std::vector<bool>(3), std::vector<bool>(1)),
              HasSubstr("(std::vector<bool>, std::vector<bool>)"));
}

TEST(CacheTest, NestedContainerSizesChangeTheKey) {
  auto id = xcs::op("id", [](int v) { return v; });
  auto f = xcs::jit([&](const auto& rows) {
    std::vector<std::vector<decltype(id(rows[0][0]))>> out;
    for (const auto& row : rows) {
      out.emplace_back();
      for (const auto& v : row) out.back().push_back(id(v));
    }
    return out;
  });
  using grid = std::vector<std::vector<int>>;
  grid a = {{1, 2}, {3}};
  grid b = {{1}, {2, 3}};  // same total, other shape
  EXPECT_EQ(f(a), a);
  EXPECT_EQ(f(b), b);
  EXPECT_EQ(f(a), a);
  EXPECT_EQ(f.stats().traces, 2u);
}

TEST(CacheTest, ArgumentTypesChangeTheKey) {
  auto square = make_square();
  auto f = xcs::jit([&](auto a, auto b) { return square(a) + square(b); });
  EXPECT_EQ(f(3, 4), 25);
  EXPECT_EQ(f(3L, 4L), 25L);
  EXPECT_DOUBLE_EQ(f(1.5, 2.0), 6.25);
  EXPECT_EQ(f(3, 4L), 25L);
  static_assert(std::is_same_v<decltype(f(1.5, 2.0)), double>);
  static_assert(std::is_same_v<decltype(f(3, 4L)), long>);
  auto st = f.stats();
  EXPECT_EQ(st.traces, 4u);
  EXPECT_EQ(st.cache_entries, 4u);
  // Cv-qualifiers and references do not: a const int lvalue is an int.
  const int x = 2;
  int y = 3;
  EXPECT_EQ(f(x, y), 13);
  EXPECT_EQ(f.stats().traces, 4u);
}

TEST(CacheTest, CapacityBoundEvictsAndStaysCorrect) {
  auto f = xcs::jit(map_square());
  EXPECT_GT(f.stats().cache_capacity, 0u) << "the default bound should be visible in stats";
  f.set_cache_capacity(4);
  for (int round = 0; round < 3; ++round) {
    for (int n = 2; n < 12; ++n) {
      std::vector<int> in(n);
      std::iota(in.begin(), in.end(), round);
      std::vector<int> expected(n);
      for (int i = 0; i < n; ++i) expected[i] = in[i] * in[i];
      ASSERT_EQ(f(in), expected) << "round " << round << ", size " << n;
      ASSERT_LE(f.stats().cache_entries, 4u);
    }
  }
  auto st = f.stats();
  EXPECT_EQ(st.cache_capacity, 4u);
  EXPECT_EQ(st.cache_entries, 4u);
  EXPECT_GT(st.evictions, 0u);
  EXPECT_EQ(st.traces, 30u) << "cycling through 10 sizes with room for 4 retraces every call";
  EXPECT_EQ(st.fallback_calls, 0u) << st.fallback_reason;
}

TEST(CacheTest, RecentlyUsedSignaturesSurviveEviction) {
  auto f = xcs::jit(map_square());
  f.set_cache_capacity(2);
  std::vector<int> hot = {1, 2};
  f(hot);
  for (int n = 3; n < 10; ++n) {
    EXPECT_EQ(f(hot), (std::vector<int>{1, 4}));  // keeps the hot signature most recent
    f(std::vector<int>(n, 1));
  }
  EXPECT_EQ(f.stats().traces, 8u) << "the hot signature was evicted although used every time";
}

TEST(CacheTest, CopiesShareTheCache) {
  auto square = make_square();
  auto f = xcs::jit([&](auto a, auto b) { return square(a) - square(b); });
  auto g = f;
  EXPECT_EQ(f(5, 3), 16);
  EXPECT_EQ(g(6, 3), 27);
  auto h = g;
  EXPECT_EQ(h(1, 1), 0);
  EXPECT_EQ(f.stats().traces, 1u);
  EXPECT_EQ(f.stats().calls, 3u);
  EXPECT_EQ(h.stats().calls, 3u);
}

TEST(CacheTest, SetCacheCapacityOnACopyBindsTheShared) {
  auto f = xcs::jit(map_square());
  auto g = f;
  g.set_cache_capacity(3);
  EXPECT_EQ(f.stats().cache_capacity, 3u);
}

}  // namespace
