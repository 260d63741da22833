// SPDX-License-Identifier: MIT
// The monitor's window classification, on its own: which threads count as waiting, and when
// an op is marked blocking.
#include <gtest/gtest.h>

#include "blocking_classifier.hpp"

namespace {

using xcs::detail::classify_window;
using xcs::detail::kWindowNs;
using xcs::detail::kWindowsToMark;

TEST(BlockingClassifierTest, SleepingThreadWaitsAndIsMarkedOnTheSecondWindow) {
  auto first = classify_window(0, kWindowNs, false, 0);
  EXPECT_TRUE(first.waiting);
  EXPECT_EQ(first.waiting_windows, 1);
  EXPECT_FALSE(first.mark_blocking);  // one unlucky window does not move the op
  auto second = classify_window(0, kWindowNs, false, first.waiting_windows);
  EXPECT_TRUE(second.waiting);
  EXPECT_EQ(second.waiting_windows, kWindowsToMark);
  EXPECT_TRUE(second.mark_blocking);
}

TEST(BlockingClassifierTest, ComputingThreadDoesNotWait) {
  auto v = classify_window(kWindowNs, kWindowNs, false, 5);
  EXPECT_FALSE(v.waiting);
  EXPECT_EQ(v.waiting_windows, 0);  // the streak ends
  EXPECT_FALSE(v.mark_blocking);
}

TEST(BlockingClassifierTest, QuarterOfACpuIsTheLine) {
  EXPECT_TRUE(classify_window(kWindowNs / 4 - 1, kWindowNs, false, 0).waiting);
  EXPECT_FALSE(classify_window(kWindowNs / 4, kWindowNs, false, 0).waiting);
}

TEST(BlockingClassifierTest, PreemptedThreadIsNotWaiting) {
  // Runnable but off the CPU: it waits for a core, and a stand-in would only compete for it.
  auto v = classify_window(0, kWindowNs, true, 1);
  EXPECT_FALSE(v.waiting);
  EXPECT_EQ(v.waiting_windows, 0);
  EXPECT_FALSE(v.mark_blocking);
}

TEST(BlockingClassifierTest, UnreadableCpuClockNeverCountsAsWaiting) {
  auto v = classify_window(-1, 10 * kWindowNs, false, 1);
  EXPECT_FALSE(v.waiting);
  EXPECT_FALSE(v.mark_blocking);
}

TEST(BlockingClassifierTest, LongerWindowsScaleTheThreshold) {
  // 1 ms of CPU in a 10 ms window is a tenth of a CPU: waiting.
  EXPECT_TRUE(classify_window(1'000'000, 10'000'000, false, 0).waiting);
  EXPECT_FALSE(classify_window(3'000'000, 10'000'000, false, 0).waiting);
}

static_assert(classify_window(0, kWindowNs, false, 1).mark_blocking,
              "the classifier is usable at compile time");

}  // namespace
