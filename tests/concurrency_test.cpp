// SPDX-License-Identifier: MIT
// Calls from many threads at once: one trace per new signature, correct results, every op
// exactly once per call, at several pool sizes.
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <latch>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using xcs_test::deadline;
using xcs_test::invocation_counter;
using xcs_test::sleep_ms;

class ConcurrencyTest : public xcs_test::PoolSizeTest {};

TEST_P(ConcurrencyTest, RacingFirstCallsTraceOnce) {
  constexpr int threads = 8;
  invocation_counter body_runs, op_runs;
  auto work = xcs::op("work", [&](int v) {
    op_runs.hit();
    return v * 3;
  });
  auto f = xcs::jit([&](auto a, auto b) {
    body_runs.hit();
    sleep_ms(20);  // a slow trace widens the race window
    return work(a) + work(b);
  });
  deadline limit(std::chrono::seconds(30), "RacingFirstCallsTraceOnce");
  std::latch go(threads);
  std::vector<int> got(threads, -1);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      go.arrive_and_wait();
      got[t] = f(t, 1);
    });
  }
  for (auto& th : pool) th.join();
  for (int t = 0; t < threads; ++t) EXPECT_EQ(got[t], 3 * t + 3) << "thread " << t;
  auto st = f.stats();
  EXPECT_EQ(st.traces, 1u);
  EXPECT_EQ(body_runs.count(), 1);
  EXPECT_EQ(st.calls, static_cast<std::uint64_t>(threads));
  EXPECT_EQ(op_runs.count(), 2 * threads);
}

TEST_P(ConcurrencyTest, RacingFirstCallsOfAFallbackTraceOnce) {
  constexpr int threads = 8;
  invocation_counter op_runs;
  auto work = xcs::op("work", [&](int v) {
    op_runs.hit();
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) {
    auto x = work(a);
    if (x > 0) return x + work(b);  // reads a value: staged
    return x;
  });
  std::latch go(threads);
  std::vector<int> got(threads, -1);
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t] {
      go.arrive_and_wait();
      got[t] = f(t + 1, 10);
    });
  }
  for (auto& th : pool) th.join();
  for (int t = 0; t < threads; ++t) EXPECT_EQ(got[t], t + 11);
  EXPECT_EQ(f.stats().traces, 1u);
  EXPECT_EQ(f.stats().staged_calls, static_cast<std::uint64_t>(threads));
  EXPECT_EQ(f.stats().fallback_calls, 0u);
  EXPECT_EQ(op_runs.count(), 2 * threads);
}

TEST_P(ConcurrencyTest, ManyThreadsShareOneJittedObjectAndItsCopies) {
  constexpr int threads = 6;
  constexpr int calls = 200;
  invocation_counter op_runs;
  auto square = xcs::op("square", [&](long v) {
    op_runs.hit();
    return v * v;
  });
  auto f = xcs::jit([&](const auto& items) {
    std::vector<decltype(square(items[0]))> out;
    for (const auto& it : items) out.push_back(square(it));
    return out;
  });
  deadline limit(std::chrono::seconds(60), "ManyThreadsShareOneJittedObjectAndItsCopies");
  std::atomic<int> wrong{0};
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) {
    pool.emplace_back([&, t, copy = f] {
      for (int c = 0; c < calls; ++c) {
        // Sizes 1..4: several signatures, some traced by racing threads.
        std::size_t n = 1 + static_cast<std::size_t>((t + c) % 4);
        std::vector<long> in(n);
        for (std::size_t i = 0; i < n; ++i) in[i] = t * 1000 + c + static_cast<long>(i);
        std::vector<long> out = (t % 2 == 0) ? f(in) : copy(in);
        for (std::size_t i = 0; i < n; ++i) {
          if (out.size() != n || out[i] != in[i] * in[i]) ++wrong;
        }
      }
    });
  }
  for (auto& th : pool) th.join();
  EXPECT_EQ(wrong.load(), 0);
  auto st = f.stats();
  EXPECT_EQ(st.calls, static_cast<std::uint64_t>(threads * calls));
  EXPECT_EQ(st.traces, 4u) << "each of the 4 signatures is traced once, not once per thread";
  // sum over calls of n, with n = 1 + (t + c) % 4: 2.5 per call on average.
  EXPECT_EQ(op_runs.count(), threads * calls * 5 / 2);
}

TEST_P(ConcurrencyTest, ConcurrentCallsOverlapTheirBlockingOps) {
  constexpr int threads = 4;
  xcs_test::concurrency_meter meter;
  auto fetch = xcs::op(
      "fetch",
      [&](int v) {
        xcs_test::concurrency_meter::guard g(meter);
        meter.await_peak(2 * threads, xcs_test::give_up());
        return v;
      },
      xcs::blocking);
  auto f = xcs::jit([&](auto a, auto b) { return fetch(a) + fetch(b); });
  std::vector<std::thread> pool;
  std::vector<int> got(threads);
  for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { got[t] = f(t, t); });
  for (auto& th : pool) th.join();
  for (int t = 0; t < threads; ++t) EXPECT_EQ(got[t], 2 * t);
  EXPECT_EQ(meter.max(), 2 * threads) << "the blocking ops of 4 concurrent calls did not overlap";
}

XCS_TEST_POOL_SIZES(ConcurrencyTest);

}  // namespace
