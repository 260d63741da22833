// SPDX-License-Identifier: MIT
// The blocking lane: its limit is settable and bounds the threads that wait in blocking ops,
// and its peak shows in stats.
#include <gtest/gtest.h>

#include <atomic>
#include <vector>

#include "test_support.hpp"
#include "xcs/xcs.hpp"

namespace {

TEST(BlockingLaneTest, LimitBoundsWaitingThreadsAndPeakShowsInStats) {
  ASSERT_EQ(xcs::blocking_lane_limit(), 1024u);
  EXPECT_THROW(xcs::set_blocking_lane_limit(0), xcs::error);
  xcs::set_blocking_lane_limit(4);
  xcs_test::concurrency_meter meter;
  auto wait = xcs::op(
      "wait",
      [&](int x) {
        xcs_test::concurrency_meter::guard g(meter);
        xcs_test::sleep_ms(40);
        return x;
      },
      xcs::blocking);
  auto f = xcs::jit([&](auto x) {
    std::vector<decltype(wait(x))> out;
    for (int i = 0; i < 16; ++i) out.push_back(wait(x));
    return out;
  });
  xcs_test::deadline guard(std::chrono::seconds(20), "lane limit");
  double ms = xcs_test::time_ms([&] { EXPECT_EQ(f(3), std::vector<int>(16, 3)); });
  EXPECT_GE(ms, 4 * 40 - 10.0) << "16 waits on 4 lane threads take 4 waves";
  EXPECT_LE(meter.max(), 4);
  EXPECT_LE(xcs::blocking_lane_peak(), 4u);
  EXPECT_GE(xcs::blocking_lane_peak(), 1u);
  EXPECT_EQ(f.stats().blocking_lane_peak, xcs::blocking_lane_peak());
  EXPECT_NE(xcs::to_string(f.stats()).find("blocking_lane_peak="), std::string::npos);
  xcs::set_blocking_lane_limit(1024);
  EXPECT_EQ(xcs::blocking_lane_limit(), 1024u);
}

}  // namespace
