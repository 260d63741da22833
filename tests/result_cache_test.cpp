// SPDX-License-Identifier: MIT
// The result cache (xcs::cache, xcs::memory_cache, xcs::cache_version): hits and misses, exact
// keys, versions, errors, the LRU bound, TTLs, single-flight across threads and calls, and what a
// hit does not take (rate-limit tokens), in plans, staged calls and direct calls.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace geo {
/// A user type with its own cache key encoding, found by ADL.
struct point {
  int x, y;
};
inline void xcs_cache_key(std::string& out, const point& p) {
  out += std::to_string(p.x) + "," + std::to_string(p.y);
}
}  // namespace geo

namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;
using xcs_test::ms_since;
using xcs_test::sleep_ms;
using xcs_test::steady;

/// The figures of op `name` in `s`.
xcs::op_stats op_figures(const xcs::stats& s, const std::string& name) {
  for (const auto& o : s.ops) {
    if (o.name == name) return o;
  }
  return {};
}

TEST(ResultCacheTest, SecondCallOfTheSameInputsRunsTheOpZeroTimes) {
  std::atomic<int> runs{0};
  auto store = xcs::memory_cache(100, 0s);
  auto square = xcs::op(
      "square",
      [&runs](int v) {
        ++runs;
        return v * v;
      },
      xcs::cache(store));
  auto plain = xcs::op("plain_square", [](int v) { return v * v; });
  auto f = xcs::jit([&](auto a, auto b) { return square(a) + square(b); });
  auto g = xcs::jit([&](auto a, auto b) { return plain(a) + plain(b); });
  EXPECT_EQ(f(3, 4), g(3, 4));
  EXPECT_EQ(runs.load(), 2);
  EXPECT_EQ(f(3, 4), g(3, 4));
  EXPECT_EQ(f(4, 3), 25);
  EXPECT_EQ(runs.load(), 2);  // every later call is a hit
  EXPECT_EQ(square(3), 9);    // the direct call shares the cache
  EXPECT_EQ(runs.load(), 2);
  auto st = op_figures(f.stats(), "square");
  EXPECT_EQ(st.cache_misses, 2u);
  EXPECT_EQ(st.cache_hits, 4u);
  EXPECT_EQ(st.calls, 2u);  // hits are not calls of the op
  EXPECT_EQ(store.size(), 2u);
  EXPECT_THAT(xcs::to_string(f.stats()), HasSubstr("cache_hits=4 cache_misses=2"));
}

TEST(ResultCacheTest, ConcatenatedInputsMakeDifferentKeys) {
  std::atomic<int> runs{0};
  auto store = xcs::memory_cache(100, 0s);
  auto join = xcs::op(
      "join",
      [&runs](const std::string& a, const std::string& b) {
        ++runs;
        return a + b;
      },
      xcs::cache(store));
  auto f = xcs::jit([&](auto a, auto b, auto c, auto d) { return join(a, b) + join(c, d); });
  using s = std::string;
  EXPECT_EQ(f(s("ab"), s("c"), s("a"), s("bc")), "abcabc");
  EXPECT_EQ(runs.load(), 2);
  EXPECT_EQ(join(s("ab"), s("c")), "abc");  // a hit
  EXPECT_EQ(join("a", "bc"), "abc");        // a C string encodes as its text: a hit
  EXPECT_EQ(runs.load(), 2);
  EXPECT_EQ(join(s(""), s("abc")), "abc");
  EXPECT_EQ(runs.load(), 3);

  // Other kinds of inputs: numbers of other types, containers, tuples, optionals, user types.
  std::atomic<int> any_runs{0};
  auto describe = xcs::op(
      "describe",
      [&any_runs](const auto& v) {
        ++any_runs;
        return sizeof(v);
      },
      xcs::cache(store));
  describe(1);
  describe(1L);
  describe(1.0F);
  describe(std::vector<std::string>{"a", "b"});
  describe(std::vector<std::string>{"ab"});
  describe(std::make_tuple(1, std::string("x"), std::optional<int>()));
  describe(std::make_pair(std::array<int, 2>{1, 2}, std::optional<int>(3)));
  describe(geo::point{1, 2});
  describe(geo::point{12, 3});
  EXPECT_EQ(any_runs.load(), 9);
  describe(geo::point{1, 2});
  describe(std::vector<std::string>{"a", "b"});
  EXPECT_EQ(any_runs.load(), 9);
}

TEST(ResultCacheTest, AnotherVersionMissesAndTheSameVersionHits) {
  std::atomic<int> runs{0};
  auto store = xcs::memory_cache(100, 0s);
  auto body = [&runs](int v) {
    ++runs;
    return v + 1;
  };
  auto v1 = xcs::op("ask", body, xcs::cache(store), xcs::cache_version("v1"));
  auto v2 = xcs::op("ask", body, xcs::cache(store), xcs::cache_version("v2"));
  auto v2_again = xcs::op("ask", body, xcs::cache_version("v2"), xcs::cache(store));
  EXPECT_EQ(v1(1), 2);
  EXPECT_EQ(v2(1), 2);
  EXPECT_EQ(runs.load(), 2);
  EXPECT_EQ(v2_again(1), 2);  // the key is the name, the version and the inputs
  EXPECT_EQ(runs.load(), 2);
}

TEST(ResultCacheTest, ErrorsAreNotCached) {
  std::atomic<int> runs{0};
  auto store = xcs::memory_cache(100, 0s);
  auto flaky = xcs::op(
      "flaky",
      [&runs](int v) {
        if (++runs == 1) throw std::runtime_error("first call fails");
        return v;
      },
      xcs::cache(store));
  auto other = xcs::op("other", [](int v) { return v; });
  auto f = xcs::jit([&](auto a, auto b) { return flaky(a) + other(b); });
  EXPECT_THROW(f(5, 1), std::runtime_error);
  EXPECT_EQ(store.size(), 0u);
  EXPECT_EQ(f(5, 1), 6);  // ran again
  EXPECT_EQ(runs.load(), 2);
  EXPECT_EQ(f(5, 1), 6);  // now a hit
  EXPECT_EQ(runs.load(), 2);
  EXPECT_THROW(
      {
        runs = 0;
        flaky(7);
      },
      std::runtime_error);  // the direct call: not cached either
  EXPECT_EQ(flaky(7), 7);
  EXPECT_EQ(runs.load(), 2);
}

TEST(ResultCacheTest, LruBoundHoldsAtEveryInsertAndAHitRefreshes) {
  std::atomic<int> runs{0};
  auto store = xcs::memory_cache(2, 0s);
  auto id = xcs::op(
      "id",
      [&runs](int v) {
        ++runs;
        return v;
      },
      xcs::cache(store));
  id(1);
  id(2);
  EXPECT_EQ(store.size(), 2u);
  id(1);  // a hit: 1 is the most recent, 2 the least
  EXPECT_EQ(runs.load(), 2);
  id(3);  // drops 2
  EXPECT_EQ(store.size(), 2u);
  id(1);
  EXPECT_EQ(runs.load(), 3);
  id(2);  // dropped: runs again, and drops 3
  EXPECT_EQ(runs.load(), 4);
  EXPECT_EQ(store.size(), 2u);
  // Many inserts from a plan: never above the bound.
  auto f = xcs::jit([&](auto a, auto b) { return id(a) + id(b); });
  for (int i = 10; i < 60; i += 2) {
    f(i, i + 1);
    ASSERT_LE(store.size(), 2u);
  }
}

TEST(ResultCacheTest, EntriesExpireAfterTheirTtl) {
  std::atomic<int> runs{0};
  auto store = xcs::memory_cache(100, 100ms);
  auto id = xcs::op(
      "id",
      [&runs](int v) {
        ++runs;
        return v;
      },
      xcs::cache(store));
  const auto t0 = steady::now();
  id(1);
  id(1);
  if (ms_since(t0) < 80) {
    EXPECT_EQ(runs.load(), 1);  // within its ttl (unless descheduled)
  }
  sleep_ms(150);
  id(1);
  EXPECT_EQ(runs.load(), 2);  // expired

  // A ttl of any duration type, and zero: no expiry.
  auto forever = xcs::memory_cache(10, std::chrono::duration<double>(0));
  auto kept = xcs::op(
      "kept",
      [&runs](int v) {
        ++runs;
        return v;
      },
      xcs::cache(forever));
  kept(1);
  sleep_ms(20);
  kept(1);
  EXPECT_EQ(runs.load(), 3);
  EXPECT_NO_THROW(xcs::memory_cache(10, std::chrono::hours(24 * 365)));
}

TEST(ResultCacheTest, BadInputIsAnXcsErrorNamingTheValue) {
  try {
    xcs::memory_cache(0, 1s);
    FAIL() << "max_entries 0 accepted";
  } catch (const xcs::error& e) {
    EXPECT_THAT(e.what(), HasSubstr("max_entries"));
    EXPECT_THAT(e.what(), HasSubstr("got 0"));
  }
  try {
    xcs::memory_cache(10, -5ms);
    FAIL() << "a negative ttl accepted";
  } catch (const xcs::error& e) {
    EXPECT_THAT(e.what(), HasSubstr("ttl"));
    EXPECT_THAT(e.what(), HasSubstr("-5 ms"));
  }
}

TEST(ResultCacheTest, ConcurrentMissesOfOneKeyMakeOneCall) {
  std::atomic<int> runs{0};
  auto store = xcs::memory_cache(100, 0s);
  auto slow = xcs::op(
      "slow",
      [&runs](int v) {
        ++runs;
        sleep_ms(50);
        return v * 10;
      },
      xcs::cache(store));
  // Both nodes of one call have the same key too.
  auto f = xcs::jit([&](auto a, auto b) { return slow(a) + slow(b); });
  std::atomic<int> ready{0};
  std::atomic<int> right{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      ++ready;
      while (ready.load() < 8) std::this_thread::yield();
      // Half call the jitted function, half the op directly: one flight for all.
      const bool ok = t % 2 ? f(7, 7) == 140 : slow(7) == 70;
      right += ok;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(right.load(), 8);
  // 4 calls of 2 nodes: each a hit, but one if the op ran in a call of f (the owner may have
  // been a direct call, which stats() does not count).
  auto st = op_figures(f.stats(), "slow");
  EXPECT_LE(st.cache_misses, 1u);
  EXPECT_EQ(st.cache_hits + st.cache_misses, 8u);
}

TEST(ResultCacheTest, AFailedOwnerHandsTheKeyToAWaiterWhoseSuccessIsCached) {
  std::atomic<int> runs{0};
  auto store = xcs::memory_cache(100, 0s);
  auto slow = xcs::op(
      "slow",
      [&runs](int v) {
        const int run = ++runs;
        sleep_ms(50);
        if (run == 1) throw std::runtime_error("the owner fails");
        return v;
      },
      xcs::cache(store));
  auto other = xcs::op("other", [](int v) { return v; });
  auto f = xcs::jit([&](auto a, auto b) { return slow(a) + other(b); });
  std::atomic<int> ready{0};
  std::atomic<int> failed{0};
  std::atomic<int> right{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      ++ready;
      while (ready.load() < 8) std::this_thread::yield();
      try {
        right += t % 2 ? f(3, 0) == 3 : slow(3) == 3;
      } catch (const std::runtime_error&) {
        ++failed;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failed.load(), 1);  // the owner's caller only
  EXPECT_EQ(right.load(), 7);   // the others got the second owner's result
  EXPECT_EQ(runs.load(), 2);
  EXPECT_EQ(f(3, 0), 3);  // cached
  EXPECT_EQ(runs.load(), 2);
}

TEST(ResultCacheTest, AHitTakesNoRateLimitToken) {
  std::atomic<int> runs{0};
  xcs::rate_limiter limiter(0.001, 4);  // no refill to speak of during the test
  auto store = xcs::memory_cache(100, 0s);
  auto ask = xcs::op(
      "ask",
      [&runs](int v) {
        ++runs;
        return v;
      },
      xcs::cache(store), xcs::rate_limit(limiter), xcs::max_concurrency(1), xcs::retry(3, 1ms));
  auto f = xcs::jit([&](auto a, auto b) { return ask(a) + ask(b); });
  EXPECT_EQ(f(1, 2), 3);
  EXPECT_NEAR(limiter.available(), 2.0, 0.01);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(f(1, 2), 3);
  EXPECT_EQ(ask(1), 1);
  EXPECT_NEAR(limiter.available(), 2.0, 0.01);  // no token taken by any hit
  EXPECT_EQ(runs.load(), 2);
  EXPECT_EQ(ask.peak_concurrency(), 1u);
}

TEST(ResultCacheTest, StagedCallsUseTheCache) {
  std::atomic<int> runs{0};
  auto store = xcs::memory_cache(100, 0s);
  auto score = xcs::op(
      "score",
      [&runs](int v) {
        ++runs;
        return v * 2;
      },
      xcs::cache(store));
  auto f = xcs::jit([&](auto a, auto b) {
    auto x = score(a);
    auto y = score(b);
    if (x > 4) return score(x + y);  // a read: the call runs staged
    return x + y;
  });
  EXPECT_EQ(f(3, 4), 28);
  EXPECT_EQ(runs.load(), 3);
  EXPECT_EQ(f(3, 4), 28);
  EXPECT_EQ(f(4, 3), 28);
  EXPECT_EQ(runs.load(), 3);
  auto st = f.stats();
  EXPECT_GE(st.staged_calls, 3u);
  EXPECT_EQ(op_figures(st, "score").cache_hits, 6u);
  EXPECT_EQ(op_figures(st, "score").cache_misses, 3u);
}

TEST(ResultCacheTest, DeadlineWhileWaitingForAnotherCallsResultThrowsAtTheDeadline) {
  std::atomic<int> runs{0};
  std::atomic<bool> inside{false};
  auto store = xcs::memory_cache(100, 0s);
  auto slow = xcs::op(
      "slow",
      [&](int v) {
        ++runs;
        inside = true;
        sleep_ms(400);
        return v;
      },
      xcs::cache(store));
  auto f = xcs::jit([&](auto a, auto b) { return slow(a) + slow(b); });
  std::thread owner([&] { slow(5); });
  while (!inside.load()) std::this_thread::yield();
  auto t0 = steady::now();
  EXPECT_THROW(f.with_deadline(50ms)(5, 5), xcs::deadline_exceeded);
  const double jitted_ms = ms_since(t0);
  t0 = steady::now();
  // The direct call inside a bounded call (a fallback runs its ops so) waits within it too.
  auto direct = xcs::jit([&](int a) { return slow(a); });
  EXPECT_THROW(direct.with_deadline(50ms)(5), xcs::deadline_exceeded);
  const double direct_ms = ms_since(t0);
  owner.join();
  EXPECT_LT(jitted_ms, 300);
  EXPECT_LT(direct_ms, 300);
  EXPECT_EQ(runs.load(), 1);
  EXPECT_EQ(f(5, 5), 10);  // the owner's result was kept
  EXPECT_EQ(runs.load(), 1);
}

TEST(ResultCacheTest, AsyncOpsAreCachedToo) {
  std::atomic<int> starts{0};
  auto store = xcs::memory_cache(100, 0s);
  auto fetch = xcs::async_op(
      "fetch",
      [&starts](int v, xcs::completion<std::string> done) {
        ++starts;
        std::thread([v, done = std::move(done)]() mutable {
          sleep_ms(5);
          done(std::to_string(v));
        }).detach();
      },
      xcs::cache(store));
  auto f = xcs::jit([&](auto a, auto b) { return fetch(a) + fetch(b); });
  EXPECT_EQ(f(1, 2), "12");
  EXPECT_EQ(f(1, 2), "12");
  EXPECT_EQ(fetch(2), "2");
  EXPECT_EQ(starts.load(), 2);
}

TEST(ResultCacheTest, ExplainListsTheCache) {
  auto store = xcs::memory_cache(100, 1s);
  auto ask = xcs::op(
      "ask", [](int v) { return v; }, xcs::cache(store), xcs::cache_version("v2"));
  auto f = xcs::jit([&](auto a, auto b) { return ask(a) + ask(b); });
  EXPECT_THAT(f.explain(1, 2), HasSubstr("[cache 100 entries ttl 1 s, version v2]"));
}

}  // namespace
