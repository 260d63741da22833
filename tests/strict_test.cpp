// SPDX-License-Identifier: MIT
// XCS_STRICT=1 throws only for bodies that could not be traced, never for a graph with
// nothing to run in parallel, nor for staged calls.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "xcs/xcs.hpp"

namespace {

// Strict mode is read once, at the first call that needs it: turn it on before any test runs.
const bool strict_on = (setenv("XCS_STRICT", "1", 1), true);

using ::testing::HasSubstr;

auto twice = xcs::op("twice", [](int x) { return 2 * x; });
auto sum = xcs::op("sum", [](const std::vector<int>& v) {
  int s = 0;
  for (int x : v) s += x;
  return s;
});

TEST(StrictTest, MappingOverZeroOneOrTwoElementsDoesNotThrow) {
  ASSERT_TRUE(strict_on);
  auto f = xcs::jit([](const auto& v) { return sum(xcs::map(twice, v)); });
  EXPECT_EQ(f(std::vector<int>{}), 0);
  EXPECT_EQ(f(std::vector<int>{3}), 6);
  EXPECT_EQ(f(std::vector<int>{3, 4}), 14);
  EXPECT_EQ(f(std::vector<int>{}), 0);
  xcs::stats st = f.stats();
  // The small graphs still run directly, counted with their reason.
  EXPECT_GE(st.fallback_calls, 2u) << st;
  EXPECT_FALSE(st.fallback_reason.empty()) << st;
}

TEST(StrictTest, ABodyThatRecordsNoOpsDoesNotThrow) {
  auto f = xcs::jit([](auto x) { return x; });
  EXPECT_EQ(f(5), 5);
  EXPECT_EQ(f.stats().fallback_calls, 1u);
}

TEST(StrictTest, ACallableThatCannotTakeTracedArgumentsThrows) {
  auto f = xcs::jit([](int& x) { return twice(x); });
  int v = 1;
  try {
    f(v);
    ADD_FAILURE() << "strict mode did not throw";
  } catch (const xcs::error& e) {
    EXPECT_THAT(e.what(), HasSubstr("XCS_STRICT"));
    EXPECT_THAT(e.what(), HasSubstr("traced arguments"));
  }
}

TEST(StrictTest, StagedCallsDoNotThrow) {
  auto f = xcs::jit([](auto x) {
    if (twice(x) > 4) return twice(x) + 1;
    return twice(x) - 1;
  });
  EXPECT_EQ(f(1), 1);
  EXPECT_EQ(f(3), 7);
  EXPECT_EQ(f.stats().staged_calls, 2u);
}

}  // namespace
