// SPDX-License-Identifier: MIT
// Stress: many threads, mixed signatures traced while others run, a full cache, nested jit,
// pool resizes, over pools of one and two workers.
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <random>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "test_support.hpp"

namespace {

using xcs_test::deadline;

#if defined(XCS_SANITIZE_THREAD) || defined(XCS_SANITIZE_ADDRESS)
constexpr int kCallsPerThread = 150;
#else
constexpr int kCallsPerThread = 2000;
#endif
constexpr int kThreads = 16;

std::atomic<long> g_square_calls{0}, g_length_calls{0}, g_total_calls{0};

auto square = xcs::op("square", [](int x) {
  g_square_calls.fetch_add(1, std::memory_order_relaxed);
  return x * x;
});
auto length = xcs::op("length", [](const auto& x) {
  g_length_calls.fetch_add(1, std::memory_order_relaxed);
  if constexpr (std::is_same_v<std::decay_t<decltype(x)>, std::string>) {
    return static_cast<int>(x.size());
  } else {
    return x;
  }
});
auto total = xcs::op("total", [](const std::vector<int>& v) {
  g_total_calls.fetch_add(1, std::memory_order_relaxed);
  int s = 0;
  for (int x : v) s += x;
  return s;
});

/// Squares every element at once, then sums them; the second argument is an int or a string.
auto sum_of_squares = [](const auto& v, const auto& extra) {
  std::vector<std::decay_t<decltype(square(*v.begin()))>> parts;
  for (const auto& e : v) parts.push_back(square(e));
  return std::make_tuple(total(parts), length(extra));
};

std::tuple<int, int> expected(const std::vector<int>& v, int extra) {
  int s = 0;
  for (int x : v) s += x * x;
  return {s, extra};
}

class StressTest : public ::testing::TestWithParam<unsigned> {
 protected:
  void SetUp() override {
    xcs::set_thread_count(GetParam());
    g_square_calls = g_length_calls = g_total_calls = 0;
  }
};

TEST_P(StressTest, ManyThreadsMixedSignaturesWhileTracing) {
  auto f = xcs::jit(sum_of_squares);
  std::atomic<long> expected_squares{0}, wrong{0};
  std::atomic<int> go{0};
  deadline guard(std::chrono::seconds(120), "ManyThreadsMixedSignaturesWhileTracing");
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      while (go.load() == 0) std::this_thread::yield();
      for (int i = 0; i < kCallsPerThread; ++i) {
        // New sizes keep appearing as the threads go on: traces run beside cached calls.
        int max_size = 1 + (i * 12) / kCallsPerThread;
        int n = 1 + static_cast<int>(rng() % static_cast<unsigned>(max_size));
        std::vector<int> v(static_cast<std::size_t>(n));
        for (int& x : v) x = static_cast<int>(rng() % 100);
        expected_squares += n;
        if (rng() % 2) {
          std::string s(rng() % 5, 'x');
          if (f(v, s) != expected(v, static_cast<int>(s.size()))) ++wrong;
        } else {
          int e = static_cast<int>(rng() % 50);
          if (f(v, e) != expected(v, e)) ++wrong;
        }
      }
    });
  }
  go = 1;
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  const long calls = long{kThreads} * kCallsPerThread;
  // Every op ran exactly once per call: none skipped, none run twice.
  EXPECT_EQ(g_square_calls.load(), expected_squares.load());
  EXPECT_EQ(g_length_calls.load(), calls);
  EXPECT_EQ(g_total_calls.load(), calls);
  xcs::stats s = f.stats();
  EXPECT_EQ(s.calls, static_cast<std::uint64_t>(calls));
  // 12 sizes x 2 types of the second argument, each traced exactly once.
  EXPECT_EQ(s.traces, 24u);
  EXPECT_EQ(s.cache_entries, 24u);
  EXPECT_EQ(s.evictions, 0u);
  EXPECT_EQ(s.fallback_calls, 0u);
  EXPECT_EQ(s.plan_runs, static_cast<std::uint64_t>(calls));
}

TEST_P(StressTest, CacheAtItsBoundEvicts) {
  auto f = xcs::jit(sum_of_squares);
  f.set_cache_capacity(4);
  // In order, one thread: 10 signatures through a cache of 4.
  for (int n = 1; n <= 10; ++n) {
    std::vector<int> v(static_cast<std::size_t>(n), 2);
    ASSERT_EQ(f(v, 1), expected(v, 1));
  }
  xcs::stats s = f.stats();
  EXPECT_EQ(s.traces, 10u);
  EXPECT_EQ(s.evictions, 6u);
  EXPECT_EQ(s.cache_entries, 4u);
  EXPECT_EQ(s.cache_capacity, 4u);
  std::vector<int> ten(10, 3), one(1, 3);
  EXPECT_EQ(f(ten, 1), expected(ten, 1));  // still cached
  EXPECT_EQ(f.stats().traces, 10u);
  EXPECT_EQ(f(one, 1), expected(one, 1));  // evicted long ago: traced again
  EXPECT_EQ(f.stats().traces, 11u);
  EXPECT_EQ(f.stats().evictions, 7u);

  // Then 16 threads over the same 10 signatures: the cache stays at its bound, every call is
  // right, and each trace either fills a free slot or evicts one.
  std::atomic<long> wrong{0};
  deadline guard(std::chrono::seconds(120), "CacheAtItsBoundEvicts");
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t) + 100);
      for (int i = 0; i < kCallsPerThread / 2; ++i) {
        std::vector<int> v(1 + rng() % 10, static_cast<int>(rng() % 9));
        if (f(v, 7) != expected(v, 7)) ++wrong;
        if (f.stats().cache_entries > 4) ++wrong;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  s = f.stats();
  EXPECT_LE(s.cache_entries, 4u);
  EXPECT_EQ(s.traces, s.evictions + s.cache_entries);
  EXPECT_GT(s.evictions, 7u);
  EXPECT_EQ(s.fallback_calls, 0u);
}

// Three levels: level1 inlines level2 twice, level2 inlines level3 twice, in the trace.
std::atomic<long> g_leaf_calls{0};
auto leaf = xcs::op("leaf", [](int x) {
  g_leaf_calls.fetch_add(1, std::memory_order_relaxed);
  return x + 1;
});
auto combine = xcs::op("combine", [](int a, int b) { return a * 3 + b; });
auto level3 = xcs::jit([](const auto& x, const auto& y) { return combine(leaf(x), leaf(y)); });
auto level2 =
    xcs::jit([](const auto& x, const auto& y) { return combine(level3(x, y), level3(y, x)); });
auto level1 =
    xcs::jit([](const auto& x, const auto& y) { return combine(level2(x, y), level2(y, x)); });

int direct3(int x, int y) { return (x + 1) * 3 + (y + 1); }
int direct2(int x, int y) { return direct3(x, y) * 3 + direct3(y, x); }
int direct1(int x, int y) { return direct2(x, y) * 3 + direct2(y, x); }

// The same three levels, but each level calls the next one from inside an op, with plain
// values: a plan runs inside a node of another plan, on a pool worker (pyember deadlocked
// here).
auto op3 = xcs::op("op3", [](int x, int y) { return level3(x, y); });
auto mid = xcs::jit([](const auto& x, const auto& y) { return combine(op3(x, y), op3(y, x)); });
auto op2 = xcs::op("op2", [](int x, int y) { return mid(x, y); });
auto top = xcs::jit([](const auto& x, const auto& y) { return combine(op2(x, y), op2(y, x)); });

TEST_P(StressTest, NestedJitThreeLevelsDeep) {
  deadline guard(std::chrono::seconds(120), "NestedJitThreeLevelsDeep");
  g_leaf_calls = 0;
  std::atomic<long> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kCallsPerThread / 4; ++i) {
        int x = t, y = i % 17;
        switch ((t + i) % 4) {
          case 0:
            wrong += level1(x, y) != direct1(x, y);
            break;
          case 1:
            wrong += level3(x, y) != direct3(x, y);
            break;
          case 2:
            wrong += top(x, y) != direct1(x, y);
            break;
          default:
            wrong += level2(x, y) != direct2(x, y);
            break;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  // level1 inlines everything: 8 leaves in one plan of 15 nodes.
  xcs::stats s = level1.stats();
  EXPECT_EQ(s.fallback_calls, 0u);
  EXPECT_EQ(s.nodes, 15u);
  EXPECT_EQ(s.traces, 1u);
  EXPECT_EQ(level2.stats().traces, 1u);  // traced for its own plain calls only
  EXPECT_EQ(top.stats().fallback_calls, 0u);
  EXPECT_EQ(mid.stats().fallback_calls, 0u);
  // Leaves per call: level1 8, level2 4, level3 2, top 8.
  long leaves = 0;
  for (int t = 0; t < kThreads; ++t) {
    for (int i = 0; i < kCallsPerThread / 4; ++i) {
      static constexpr int per[] = {8, 2, 8, 4};
      leaves += per[(t + i) % 4];
    }
  }
  EXPECT_EQ(g_leaf_calls.load(), leaves);
}

TEST_P(StressTest, PoolResizedWhileCallsRun) {
  constexpr int kCallers = 8;
  auto f = xcs::jit(sum_of_squares);
  std::atomic<bool> stop{false};
  std::atomic<long> wrong{0}, calls{0};
  // started: calls begun; calls: calls ended. A call that began before a resize returned and
  // ended after it began overlapped it.
  std::atomic<long> started{0};
  xcs_test::concurrency_meter in_call;
  deadline guard(std::chrono::seconds(120), "PoolResizedWhileCallsRun");
  std::vector<std::thread> threads;
  for (int t = 0; t < kCallers; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937 rng(static_cast<unsigned>(t));
      while (!stop.load()) {
        std::vector<int> v(1 + rng() % 6, t);
        ++started;
        {
          xcs_test::concurrency_meter::guard g(in_call);
          if (f(v, t) != expected(v, t)) ++wrong;
        }
        ++calls;
      }
    });
  }
  // Resize only once every caller is inside a call.
  in_call.await_peak(kCallers, xcs_test::give_up());
  EXPECT_EQ(in_call.max(), kCallers) << "the callers never were all in a call at once";
  int resizes_alone = 0;
  for (int i = 0; i < 20; ++i) {
    long ended_before = calls.load();
    xcs::set_thread_count(1 + static_cast<unsigned>(i % 2));
    if (started.load() - ended_before == 0) ++resizes_alone;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
  stop = true;
  for (auto& th : threads) th.join();
  xcs::set_thread_count(GetParam());
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(resizes_alone, 0) << "resizes during which no call ran";
  EXPECT_EQ(xcs::thread_count(), GetParam());
}

TEST_P(StressTest, MoreRunsOfferedAtOnceThanOneBlockOfListings) {
  // Each call's first op waits until every thread's call has started one, so all the runs
  // are offered to the pool at the same time: more than the 64 listings of its first block.
  constexpr int kCallers = 80;
  std::atomic<int> arrived{0};
  auto arrive = xcs::op("arrive", [&](int x) {
    if (x < 0) {
      xcs_test::spin_ms(1);  // the first call: traces, and teaches the op is worth a worker
      return x;
    }
    arrived.fetch_add(1);
    while (arrived.load() < kCallers) std::this_thread::yield();
    return x;
  });
  auto f = xcs::jit([&](auto x) { return arrive(x) + square(x) + square(x + 1); });
  ASSERT_EQ(f(-1), -1 + 1 + 0);
  deadline guard(std::chrono::seconds(120), "MoreRunsOfferedAtOnceThanOneBlockOfListings");
  std::atomic<long> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kCallers; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 3; ++i) wrong += f(t) != t + t * t + (t + 1) * (t + 1);
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(f.stats().fallback_calls, 0u);
}

INSTANTIATE_TEST_SUITE_P(PoolSizes, StressTest, ::testing::Values(1u, 2u),
                         [](const auto& info) { return "Workers" + std::to_string(info.param); });

}  // namespace
