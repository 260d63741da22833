// SPDX-License-Identifier: MIT
// The pool is lazy: a process whose jitted functions only fall back, or have no parallelism,
// starts no thread. No test here may run a parallel plan (gtest runs them in one process).
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <string>
#include <vector>

#include "test_support.hpp"

namespace {

using ::testing::HasSubstr;
using xcs_test::process_threads;

TEST(LazyPoolTest, FallbackOnlyStartsNoThread) {
  auto f = xcs::jit([](auto a, auto b) { return std::max<int>(a, b); });  // reads, records no op
  for (int i = 0; i < 10; ++i) EXPECT_EQ(f(i, 5), i < 5 ? 5 : i);
  EXPECT_EQ(f.stats().staged_calls + f.stats().fallback_calls, 10u);
  EXPECT_FALSE(xcs::pool_started());
  EXPECT_EQ(process_threads(), 1);
}

TEST(LazyPoolTest, StagedChainStartsNoThread) {
  // Each op needs the value read before it: nothing ever runs at the same time, so the
  // caller runs every op itself.
  auto id = xcs::op("id", [](int v) { return v; });
  auto f = xcs::jit([&](auto a, auto b) {
    auto x = id(a);
    if (x < b) return id(x + b);  // reads a value: staged
    return x;
  });
  for (int i = 0; i < 10; ++i) EXPECT_EQ(f(i, 5), i < 5 ? i + 5 : i);
  EXPECT_EQ(f.stats().staged_calls, 10u);
  EXPECT_FALSE(xcs::pool_started());
  EXPECT_EQ(process_threads(), 1);
}

TEST(LazyPoolTest, ChainWithoutParallelismStartsNoThread) {
  auto step = xcs::op("step", [](int v) { return v + 1; });
  auto f = xcs::jit([&](auto a) { return step(step(step(a))); });
  for (int i = 0; i < 10; ++i) EXPECT_EQ(f(i), i + 3);
  EXPECT_THAT(f.stats().fallback_reason, HasSubstr("no independent ops"));
  EXPECT_FALSE(xcs::pool_started());
  EXPECT_EQ(process_threads(), 1);
}

TEST(LazyPoolTest, BodyWithoutOpsStartsNoThread) {
  auto f = xcs::jit([](auto a, auto b) { return a + b; });
  EXPECT_EQ(f(2, 3), 5);
  auto g = xcs::jit([](const auto& items) { return items.size(); });
  EXPECT_EQ(g(std::vector<int>{1, 2, 3}), 3u);
  EXPECT_FALSE(xcs::pool_started());
  EXPECT_EQ(process_threads(), 1);
}

TEST(LazyPoolTest, SingleItemBatchStartsNoThread) {
  auto square = xcs::op("square", [](int v) { return v * v; });
  auto f = xcs::jit([&](const auto& items) {
    std::vector<decltype(square(items[0]))> out;
    for (const auto& it : items) out.push_back(square(it));
    return out;
  });
  EXPECT_EQ(f(std::vector<int>{}), std::vector<int>{});
  EXPECT_EQ(f(std::vector<int>{4}), std::vector<int>{16});
  EXPECT_FALSE(xcs::pool_started());
  EXPECT_EQ(process_threads(), 1);
}

TEST(LazyPoolTest, ExplainDotAndPlainOpCallsStartNoThread) {
  auto id = xcs::op("id", [](int v) { return v; });
  EXPECT_EQ(id(7), 7);  // a plain call just calls through
  auto f = xcs::jit([&](auto a, auto b) { return id(a) + id(b); });
  EXPECT_THAT(f.explain(1, 2), HasSubstr("max parallelism: 2"));
  EXPECT_THAT(f.dot(1, 2), HasSubstr("digraph"));
  EXPECT_FALSE(xcs::pool_started());
}

TEST(LazyPoolTest, ConfiguringThePoolDoesNotStartIt) {
  unsigned before = xcs::thread_count();
  EXPECT_GE(before, 1u);
  xcs::set_thread_count(3);
  EXPECT_EQ(xcs::thread_count(), 3u);
  EXPECT_THROW(xcs::set_thread_count(0), xcs::error);
  xcs::set_thread_count(before);
  EXPECT_FALSE(xcs::pool_started());
  EXPECT_EQ(process_threads(), 1);
}

}  // namespace
