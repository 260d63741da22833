// SPDX-License-Identifier: MIT
// The blocking lane: the threads a burst needed retire once idle, and the thread limit bounds
// how many blocking ops run at once.
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <chrono>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using xcs_test::concurrency_meter;
using xcs_test::give_up;
using xcs_test::sleep_ms;
using xcs_test::steady;

/// Sets the lane's thread limit for the scope, then puts the old one back.
class scoped_limit {
 public:
  explicit scoped_limit(unsigned n) : saved_(xcs::blocking_thread_limit()) {
    xcs::set_blocking_thread_limit(n);
  }
  ~scoped_limit() { xcs::set_blocking_thread_limit(saved_); }
  scoped_limit(const scoped_limit&) = delete;
  scoped_limit& operator=(const scoped_limit&) = delete;

 private:
  unsigned saved_;
};

/// A jitted function running one hinted blocking op per element; each op holds until `peak`
/// of them run at once.
auto fan_out(concurrency_meter& meter, int peak) {
  auto fetch = xcs::op(
      "fetch",
      [&meter, peak](int v) {
        concurrency_meter::guard g(meter);
        meter.await_peak(peak, give_up());
        return v;
      },
      xcs::blocking);
  return xcs::jit([fetch](const auto& items) {
    std::vector<decltype(fetch(items[0]))> out;
    for (const auto& it : items) out.push_back(fetch(it));
    return out;
  });
}

TEST(BlockingLaneTest, IdleThreadsRetireAfterABurst) {
  constexpr int kBurst = 200;
  concurrency_meter meter;
  auto burst = fan_out(meter, kBurst);
  const int threads_before = xcs_test::process_threads();
  const std::vector<int> in(kBurst, 1);
  EXPECT_EQ(burst(in), in);
  ASSERT_EQ(meter.max(), kBurst) << "the burst did not run at once";
  EXPECT_GE(burst.stats().blocking_threads_peak, static_cast<unsigned>(kBurst));

  // Every lane thread is idle now: each retires 500 ms after its last op.
  const auto t0 = steady::now();
  for (auto end = give_up(); steady::now() < end;) {
    if (burst.stats().blocking_threads == 0 && xcs_test::process_threads() < threads_before + 20) {
      break;
    }
    sleep_ms(10);
  }
  double ms = xcs_test::ms_since(t0);
  EXPECT_EQ(burst.stats().blocking_threads, 0u) << "lane threads still alive " << ms << " ms on";
  // Their OS threads are gone too (the pool's own workers and monitor may have started since).
  EXPECT_LT(xcs_test::process_threads(), threads_before + 20);
  RecordProperty("retired_after_ms", static_cast<int>(ms));
  std::printf("[blocking_lane] %d idle lane threads retired within %.0f ms\n", kBurst, ms);
}

TEST(BlockingLaneTest, LimitBoundsTheBlockingOpsRunningAtOnce) {
  scoped_limit limit(8);
  EXPECT_EQ(xcs::blocking_thread_limit(), 8u);
  concurrency_meter meter;
  auto burst = fan_out(meter, 8);
  const std::vector<int> in(64, 3);
  EXPECT_EQ(burst(in), in);
  EXPECT_EQ(meter.max(), 8) << "at most 8 lane threads, and the 64 ops queue for them";
  EXPECT_LE(burst.stats().blocking_threads, 8u);
}

TEST(BlockingLaneTest, LoweringTheLimitRetiresIdleThreadsAndBoundsNewOps) {
  concurrency_meter meter;
  auto wide = fan_out(meter, 32);
  const std::vector<int> in(32, 7);
  EXPECT_EQ(wide(in), in);  // leaves 32 idle lane threads behind
  ASSERT_EQ(meter.max(), 32);
  ASSERT_GE(wide.stats().blocking_threads, 32u) << "the idle threads retired already";
  scoped_limit limit(4);
  // Idle ones retire at once; the few still finishing their task as the call returned, then.
  for (auto end = give_up(); wide.stats().blocking_threads > 4 && steady::now() < end;) {
    sleep_ms(1);
  }
  EXPECT_LE(wide.stats().blocking_threads, 4u) << "threads over the new limit stayed";
  // And none of them takes new work: 4 at a time.
  concurrency_meter narrow_meter;
  auto narrow = fan_out(narrow_meter, 4);
  EXPECT_EQ(narrow(in), in);
  EXPECT_EQ(narrow_meter.max(), 4);
}

TEST(BlockingLaneTest, RaisingTheLimitGivesWaitingOpsAThread) {
  scoped_limit limit(1);
  concurrency_meter meter;
  auto burst = fan_out(meter, 4);
  const std::vector<int> in(4, 5);
  std::vector<int> got;
  std::thread caller([&] { got = burst(in); });
  // One op runs (and holds), three wait for a thread.
  while (meter.now() < 1) sleep_ms(1);
  sleep_ms(20);
  EXPECT_EQ(meter.now(), 1);
  xcs::set_blocking_thread_limit(4);
  caller.join();
  EXPECT_EQ(got, in);
  EXPECT_EQ(meter.max(), 4) << "the waiting ops did not get threads when the limit rose";
}

TEST(BlockingLaneTest, LimitOfZeroThrows) {
  unsigned before = xcs::blocking_thread_limit();
  EXPECT_THROW(xcs::set_blocking_thread_limit(0), xcs::error);
  EXPECT_EQ(xcs::blocking_thread_limit(), before);
}

}  // namespace
