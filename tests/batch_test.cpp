// SPDX-License-Identifier: MIT
// Batches: mapping an op over an empty vector, a single item, and 20,000 items.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <cstdint>
#include <numeric>
#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using ::testing::HasSubstr;
using xcs_test::invocation_counter;

TEST(BatchTest, EmptyVectorReturnsEmptyResult) {
  invocation_counter runs;
  auto square = xcs::op("square", [&](int v) {
    runs.hit();
    return v * v;
  });
  auto body = [&](const auto& items) {
    std::vector<decltype(square(items[0]))> out;  // unevaluated: fine when empty
    for (const auto& it : items) out.push_back(square(it));
    return out;
  };
  auto f = xcs::jit(body);
  std::vector<int> empty;
  std::vector<int> got = f(empty);
  EXPECT_TRUE(got.empty());
  EXPECT_EQ(got, body(empty));
  EXPECT_EQ(runs.count(), 0);
  EXPECT_EQ(f(empty), std::vector<int>{});
  auto st = f.stats();
  EXPECT_EQ(st.traces, 1u);
  EXPECT_FALSE(st.fallback_reason.empty()) << "an empty batch has nothing to run in parallel";
  // A non-empty batch of the same function still runs a plan.
  EXPECT_EQ(f(std::vector<int>{2, 3}), (std::vector<int>{4, 9}));
  EXPECT_TRUE(f.stats().optimized);
}

TEST(BatchTest, SingleItemFallsBackAndIsCorrect) {
  auto square = xcs::op("square", [](int v) { return v * v; });
  auto f = xcs::jit([&](const auto& items) {
    std::vector<decltype(square(items[0]))> out;
    for (const auto& it : items) out.push_back(square(it));
    return out;
  });
  EXPECT_EQ(f(std::vector<int>{7}), std::vector<int>{49});
  EXPECT_THAT(f.stats().fallback_reason, HasSubstr("no independent ops"));
}

TEST(BatchTest, TwentyThousandItemsEveryResultChecked) {
  constexpr int n = 20000;
  invocation_counter runs;
  auto transform = xcs::op("transform", [&](std::int64_t v) {
    runs.hit();
    return v * 3 + 1;
  });
  auto f = xcs::jit([&](const auto& items) {
    std::vector<decltype(transform(items[0]))> out;
    out.reserve(items.size());
    for (const auto& it : items) out.push_back(transform(it));
    return out;
  });
  for (int call = 0; call < 2; ++call) {
    std::vector<std::int64_t> in(n);
    std::iota(in.begin(), in.end(), std::int64_t{call * 100000});
    std::vector<std::int64_t> got = f(in);
    ASSERT_EQ(got.size(), static_cast<std::size_t>(n));
    int wrong = 0;
    for (int i = 0; i < n; ++i) wrong += got[i] != in[i] * 3 + 1;
    EXPECT_EQ(wrong, 0) << "call " << call;
    EXPECT_EQ(runs.count(), n * (call + 1)) << "each item's op runs exactly once per call";
  }
  auto st = f.stats();
  EXPECT_EQ(st.traces, 1u);
  EXPECT_EQ(st.fallback_calls, 0u) << st.fallback_reason;
  EXPECT_EQ(st.nodes, static_cast<std::size_t>(n));
  EXPECT_EQ(st.max_parallelism, static_cast<std::size_t>(n));
}

TEST(BatchTest, TwentyThousandItemsReducedThroughPack) {
  constexpr int n = 20000;
  auto square = xcs::op("square", [](std::int64_t v) { return v * v; });
  auto total = xcs::op("total", [](const std::vector<std::int64_t>& v) {
    return std::accumulate(v.begin(), v.end(), std::int64_t{0});
  });
  auto f = xcs::jit([&](const auto& items) {
    std::vector<decltype(square(items[0]))> out;
    for (const auto& it : items) out.push_back(square(it));
    return total(out);
  });
  std::vector<std::int64_t> in(n);
  std::iota(in.begin(), in.end(), 1);
  std::int64_t expected = std::int64_t{n} * (n + 1) * (2 * n + 1) / 6;
  EXPECT_EQ(f(in), expected);
  EXPECT_EQ(f(in), expected);
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
}

TEST(BatchTest, BatchOfStrings) {
  constexpr int n = 2000;
  auto tag = xcs::op("tag", [](const std::string& s) { return "<" + s + ">"; });
  auto f = xcs::jit([&](const auto& items) {
    std::vector<decltype(tag(items[0]))> out;
    for (const auto& it : items) out.push_back(tag(it));
    return out;
  });
  std::vector<std::string> in(n);
  for (int i = 0; i < n; ++i) in[i] = "item" + std::to_string(i);
  std::vector<std::string> got = f(in);
  ASSERT_EQ(got.size(), in.size());
  for (int i = 0; i < n; ++i) ASSERT_EQ(got[i], "<" + in[i] + ">") << i;
}

}  // namespace
