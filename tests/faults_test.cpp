// SPDX-License-Identifier: MIT
// Faults: many ops throwing at once, non-standard exceptions, ops that never return, and
// allocation failures while tracing.
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <future>
#include <mutex>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

// ---- a global operator new that can fail on purpose ------------------------------------------
//
// Armed per thread (the trace runs on the calling thread), so gtest and the pool's workers
// are never affected. Delete is replaced too, so that sanitizers see malloc paired with free.

namespace {
thread_local long t_fail_at = -1;    // allocations to let through before failing
thread_local long t_fail_count = 0;  // how many allocations fail from there on

void* allocate(std::size_t n) {
  if (t_fail_at >= 0) {
    if (t_fail_at == 0 && t_fail_count > 0) {
      --t_fail_count;
      if (t_fail_count == 0) t_fail_at = -1;
      throw std::bad_alloc();
    }
    if (t_fail_at > 0) --t_fail_at;
  }
  if (void* p = std::malloc(n ? n : 1)) return p;
  throw std::bad_alloc();
}
}  // namespace

// GCC, once it inlines allocate() (at -O1 under TSan), takes the free() below for one of a
// pointer from the built-in operator new: these are the replacements, so the pairing is right.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
void* operator new(std::size_t n) { return allocate(n); }
void* operator new[](std::size_t n) { return allocate(n); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic pop
#endif

namespace {

/// Fails `count` allocations of this thread after letting `skip` through, while in scope.
struct failing_allocations {
  failing_allocations(long skip, long count) {
    t_fail_at = skip;
    t_fail_count = count;
  }
  ~failing_allocations() {
    t_fail_at = -1;
    t_fail_count = 0;
  }
  bool fired() const { return t_fail_count == 0; }
};

#if defined(XCS_SANITIZE_THREAD) || defined(XCS_SANITIZE_ADDRESS)
constexpr int kRepeats = 60;
#else
constexpr int kRepeats = 200;
#endif

void spin_for(std::chrono::microseconds d) {
  auto until = std::chrono::steady_clock::now() + d;
  while (std::chrono::steady_clock::now() < until) {
  }
}

// ---- exception order --------------------------------------------------------------------------

struct numbered_error : std::runtime_error {
  explicit numbered_error(int i) : std::runtime_error("op " + std::to_string(i)), index(i) {}
  int index;
};

constexpr int kWidth = 16;
std::array<std::atomic<int>, kWidth> g_ran{};

/// Op i spins longer the earlier it is in program order, so that later ops throw first in
/// time; ops from kFirstThrower on throw.
constexpr int kFirstThrower = 4;
auto step = xcs::op("step", [](int i, int x) {
  g_ran[static_cast<std::size_t>(i)].fetch_add(1);
  spin_for(std::chrono::microseconds((kWidth - i) * 20));
  if (i >= kFirstThrower) throw numbered_error(i);
  return x + i;
});
auto after = xcs::op("after", [](int x) {
  g_ran[0].fetch_add(1000);  // must never run: its input threw
  return x;
});

auto wide_body = [](const auto& x) {
  // One op per statement: program order is statement order.
  auto r0 = step(0, x);
  auto r1 = step(1, x);
  auto r2 = step(2, x);
  auto r3 = step(3, x);
  auto r4 = step(4, x);
  auto r5 = step(5, x);
  auto r6 = step(6, x);
  auto r7 = step(7, x);
  auto r8 = step(8, x);
  auto r9 = step(9, x);
  auto r10 = step(10, x);
  auto r11 = step(11, x);
  auto r12 = step(12, x);
  auto r13 = step(13, x);
  auto r14 = step(14, x);
  auto r15 = step(15, x);
  auto tail = after(r15);
  return std::vector{r0, r1, r2, r3, r4, r5, r6, r7, r8, r9, r10, r11, r12, r13, r14, tail};
};

TEST(FaultsTest, FirstThrowerInProgramOrderWinsEveryTime) {
  auto f = xcs::jit(wide_body);
  for (int rep = 0; rep < kRepeats; ++rep) {
    for (auto& r : g_ran) r = 0;
    try {
      f(rep);
      FAIL() << "no exception";
    } catch (const numbered_error& e) {
      ASSERT_EQ(e.index, kFirstThrower) << "repeat " << rep;
      ASSERT_STREQ(e.what(), "op 4");
    }
    // Every op before the winner ran exactly once, as in the direct call; later ops ran at
    // most once (only if already started); the op fed by a thrower never ran.
    for (int i = 0; i <= kFirstThrower; ++i) ASSERT_EQ(g_ran[i].load() % 1000, 1) << i;
    for (int i = kFirstThrower + 1; i < kWidth; ++i) ASSERT_LE(g_ran[i].load(), 1) << i;
    ASSERT_LT(g_ran[0].load(), 1000);
  }
  xcs::stats s = f.stats();
  EXPECT_EQ(s.calls, static_cast<std::uint64_t>(kRepeats));
  EXPECT_EQ(s.fallback_calls, 0u);
  EXPECT_TRUE(s.optimized);
}

TEST(FaultsTest, FirstThrowerWinsWhenManyThreadsCall) {
  auto f = xcs::jit(wide_body);
  std::atomic<int> wrong{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int rep = 0; rep < kRepeats / 4; ++rep) {
        try {
          f(rep);
          ++wrong;
        } catch (const numbered_error& e) {
          wrong += e.index != kFirstThrower;
        } catch (...) {
          ++wrong;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
}

// ---- exceptions not derived from std::exception -------------------------------------------

struct not_std {
  int code;
};
auto throw_not_std = xcs::op("throw_not_std", [](int x) -> int {
  spin_for(std::chrono::microseconds(50));
  throw not_std{x};
});
auto throw_int = xcs::op("throw_int", [](int) -> int { throw 42; });
auto plain = xcs::op("plain", [](int x) { return x + 1; });

TEST(FaultsTest, NonStandardExceptionsReachTheCallerUnchanged) {
  auto f = xcs::jit([](const auto& x) {
    auto a = plain(x);
    auto b = throw_not_std(x);
    auto c = throw_int(x);
    return a + b + c;
  });
  for (int rep = 0; rep < 20; ++rep) {
    try {
      f(rep);
      FAIL() << "no exception";
    } catch (const not_std& e) {
      EXPECT_EQ(e.code, rep);  // the earlier op's, although throw_int throws sooner
    } catch (...) {
      FAIL() << "wrong exception type";
    }
  }
  auto g = xcs::jit([](const auto& x) {
    auto a = plain(x);
    auto c = throw_int(x);
    return std::make_pair(a, c);
  });
  EXPECT_THROW(
      {
        try {
          g(1);
        } catch (int i) {
          EXPECT_EQ(i, 42);
          throw;
        }
      },
      int);
  EXPECT_EQ(f.stats().fallback_calls, 0u);
  EXPECT_EQ(g.stats().fallback_calls, 0u);
}

// ---- an op that never returns ----------------------------------------------------------------

TEST(FaultsTest, NeverReturningOpDoesNotStopOtherFunctions) {
  // Workers: one. The stuck op holds a thread for the whole test; calls of other functions
  // must still finish: their callers run nodes themselves, and the pool adds threads while
  // a worker sits in an op that uses no CPU.
  xcs::set_thread_count(1);
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> entered{0};
  auto hang = xcs::op("hang", [released, &entered](int x) {
    ++entered;
    released.wait();
    return x;
  });
  auto stuck = xcs::jit([&](const auto& x) { return std::make_pair(hang(x), plain(x)); });
  std::atomic<bool> stuck_returned{false};
  std::thread caller([&] {
    auto r = stuck(1);
    EXPECT_EQ(r, std::make_pair(1, 2));
    stuck_returned = true;
  });
  while (entered.load() == 0) std::this_thread::yield();

  auto other = xcs::jit([](const auto& v) {
    std::vector<std::decay_t<decltype(plain(v[0]))>> out;
    for (const auto& e : v) out.push_back(plain(e));
    return out;
  });
  auto t0 = std::chrono::steady_clock::now();
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      for (int i = 0; i < 200; ++i) {
        std::vector<int> v(8, i);
        wrong += other(v) != std::vector<int>(8, i + 1);
      }
    });
  }
  for (auto& th : callers) th.join();
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LT(secs, 30.0);
  EXPECT_EQ(other.stats().fallback_calls, 0u);

  // The stuck call itself does not return until its op does; once released, the function
  // works as before.
  EXPECT_FALSE(stuck_returned.load());
  release.set_value();
  caller.join();
  EXPECT_TRUE(stuck_returned.load());
  EXPECT_EQ(stuck(5), std::make_pair(5, 6));
  xcs::set_thread_count(2);
}

// ---- allocation failures while tracing ------------------------------------------------------

auto twice = xcs::op("twice", [](int x) { return 2 * x; });
auto body_for_alloc = [](const auto& v, const auto& s) {
  std::vector<std::decay_t<decltype(twice(v[0]))>> out;
  for (const auto& e : v) out.push_back(twice(e));
  return std::make_pair(out, s);
};

TEST(FaultsTest, BadAllocThrownByTheBodyAtTraceTimeFallsBack) {
  auto f = xcs::jit([](const auto& x) {
    if constexpr (!std::is_same_v<std::decay_t<decltype(x)>, int>) throw std::bad_alloc();
    return x + 1;
  });
  EXPECT_EQ(f(1), 2);
  EXPECT_EQ(f(2), 3);
  xcs::stats s = f.stats();
  EXPECT_EQ(s.fallback_calls, 2u);
  EXPECT_EQ(s.fallback_reason, "out of memory while tracing or compiling");
}

using alloc_result = decltype(body_for_alloc(std::vector<int>{}, std::string{}));

/// Calls `f(v, s)` on another thread; true if it returns `expected` within 10 s, false if
/// it returns something else, nullopt if it hangs (the thread is then left behind, blocked).
template <class F>
std::optional<bool> second_call(const F& f, std::vector<int> v, std::string s,
                                alloc_result expected) {
  auto done = std::make_shared<std::promise<bool>>();
  std::future<bool> result = done->get_future();
  std::thread([f, v, s, expected, done] { done->set_value(f(v, s) == expected); }).detach();
  if (result.wait_for(std::chrono::seconds(10)) != std::future_status::ready) return {};
  return result.get();
}

/// Fails allocations of the first call of a new jitted function: `count` of them in a row
/// after letting `n` through, for every n. The call either returns the right value (falling
/// back if tracing or compiling failed) or throws std::bad_alloc, as the direct call may; a
/// later call with the same signature, from another thread, must then work and not wait
/// forever for a trace that was abandoned.
void fail_each_allocation_of_first_call(long count) {
  std::vector<int> v{1, 2, 3};
  const std::string s = "a string long enough to be allocated";
  const alloc_result expected = body_for_alloc(v, s);
  int fell_back = 0, threw = 0, planned = 0;
  for (long n = 0; n < 3000; ++n) {
    auto f = xcs::jit(body_for_alloc);
    bool fired = true, returned = false;
    try {
      failing_allocations fail(n, count);
      auto r = f(v, s);
      fired = t_fail_count < count;
      returned = true;
      EXPECT_EQ(r, expected) << "allocation " << n;
    } catch (const std::bad_alloc&) {
      ++threw;
    }
    if (!fired) break;  // the call made fewer than n allocations: every one was covered
    std::optional<bool> again = second_call(f, v, s, expected);
    if (!again) {
      ADD_FAILURE() << "after allocation " << n << " of the first call failed (" << count
                    << " in a row; the call " << (returned ? "returned" : "threw bad_alloc")
                    << "), a second call with the same signature waits forever: the cache "
                       "entry was never published";
      return;
    }
    EXPECT_TRUE(*again) << "after allocation " << n;
    xcs::stats st = f.stats();
    if (st.fallback_calls > 0) {
      ++fell_back;
      EXPECT_NE(st.fallback_reason.find("out of memory"), std::string::npos)
          << "allocation " << n << ": " << st.fallback_reason;
    } else {
      ++planned;
    }
  }
  std::printf(
      "[faults] failing %ld allocation(s) in a row: %d first calls fell back, %d threw "
      "bad_alloc, %d ran a plan\n",
      count, fell_back, threw, planned);
  EXPECT_GT(fell_back, 0);
}

TEST(FaultsTest, EachAllocationOfTheFirstCallMayFail) { fail_each_allocation_of_first_call(1); }

TEST(FaultsTest, RunOfFailingAllocationsLeavesNoHalfTracedSignature) {
  // Several failures in a row: the handlers that turn an allocation failure into a fallback
  // reason allocate too.
  fail_each_allocation_of_first_call(8);
}

/// Fails every allocation of a first call from the n-th on, for growing n, until a call gets
/// as far as starting the pool; exits 0 if it did.
[[noreturn]] void start_pool_while_allocations_fail() {
  std::vector<int> v{1, 2, 3};
  const std::string s = "a string long enough to be allocated";
  for (long n = 0; n < 5000 && !xcs::pool_started(); ++n) {
    // A fresh op each time: an op already measured as cheap never wakes a worker, so only an
    // op not yet measured makes a plan start the pool.
    auto fresh = xcs::op("fresh", [](int x) { return 2 * x; });
    auto f = xcs::jit([&fresh](const auto& vs, const auto& str) {
      std::vector<std::decay_t<decltype(fresh(vs[0]))>> out;
      for (const auto& e : vs) out.push_back(fresh(e));
      return std::make_pair(out, str);
    });
    try {
      failing_allocations fail(n, 1'000'000);
      (void)f(v, s);
    } catch (const std::bad_alloc&) {
    }
  }
  std::exit(xcs::pool_started() ? 0 : 3);
}

TEST(FaultsTest, PoolStartFailingForLackOfMemoryDoesNotCrash) {
  // The first plan that needs helpers starts the pool (allocates it and its threads). If that
  // allocation fails, the call may throw std::bad_alloc or run without helpers, but must not
  // terminate the process. Runs in a fresh process, in which the pool has not started yet.
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(start_pool_while_allocations_fail(), ::testing::ExitedWithCode(0), "");
}

}  // namespace
