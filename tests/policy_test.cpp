// SPDX-License-Identifier: MIT
// Op options that change what happens to a node: xcs::timeout, xcs::retry, xcs::retry_if and
// xcs::rate_limit, in plans, staged calls and direct calls. Bounds are generous: this machine
// has 2 noisy cores.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <xcs/detail/token_source.hpp>
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using xcs_test::ms_since;
using xcs_test::sleep_ms;
using xcs_test::steady;

/// An exception that remembers its own address, to check the caller gets the same object.
struct flaky_failure : std::runtime_error {
  explicit flaky_failure(int n) : std::runtime_error("attempt " + std::to_string(n)) {}
  const flaky_failure* origin = this;
};

/// Shared with ops that may outlive a call (timed out): held by shared_ptr, captured by value.
struct probe {
  std::atomic<int> calls{0}, finished{0}, stopped{0};
  std::mutex m;
  std::vector<steady::time_point> starts;
  void started() {
    ++calls;
    std::lock_guard lock(m);
    starts.push_back(steady::now());
  }
  void settle() const {
    for (auto until = xcs_test::give_up(); steady::now() < until && finished < calls;) sleep_ms(1);
    sleep_ms(10);
  }
};

/// What a loaded two-core machine may add to a backoff, and to a first call (which traces).
/// Sanitizers slow every step: under TSan at load 5 this test's call once took 485 ms.
#if defined(XCS_SANITIZE_THREAD) || defined(XCS_SANITIZE_ADDRESS)
constexpr auto kGapSlack = 300ms;
constexpr double kCallSlackMs = 1000;
#else
constexpr auto kGapSlack = 60ms;
constexpr double kCallSlackMs = 150;
#endif

TEST(PolicyTest, RetriedOpReturnsItsValueAndCountsItsRetries) {
  auto p = std::make_shared<probe>();
  auto flaky = xcs::op(
      "flaky",
      [p](int v) {
        p->started();
        ++p->finished;
        if (p->calls % 3 != 0) throw flaky_failure(p->calls);  // fails twice, then succeeds
        return v * 10;
      },
      xcs::retry(3, 20ms));
  auto other = xcs::op("other", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) { return flaky(a) + other(a); });
  const auto t0 = steady::now();
  EXPECT_EQ(f(4), 44);
  const double took = ms_since(t0);
  xcs::stats s = f.stats();
  ASSERT_EQ(p->calls.load(), 3);
  const auto& op = s.ops[0].name == "flaky" ? s.ops[0] : s.ops[1];
  EXPECT_EQ(op.retries, 2u);
  EXPECT_EQ(op.calls, 3u) << "every attempt counts as a call";
  EXPECT_EQ(op.errors, 0u);
  EXPECT_THAT(xcs::to_string(s), testing::HasSubstr("errors=0 total="));
  EXPECT_THAT(xcs::to_string(s), testing::ContainsRegex("op flaky .* retries=2"));
  // Full jitter: attempt 2 within [0, 20] ms of attempt 1, attempt 3 within [0, 40] ms.
  std::lock_guard lock(p->m);
  EXPECT_LE(p->starts[1] - p->starts[0], 20ms + kGapSlack);
  EXPECT_LE(p->starts[2] - p->starts[1], 40ms + kGapSlack);
  EXPECT_LT(took, 60.0 + kCallSlackMs);
}

TEST(PolicyTest, LastAttemptsExceptionReachesTheCallerAsTheSameObject) {
  auto p = std::make_shared<probe>();
  auto always = xcs::op(
      "always",
      [p](int) -> int {
        p->started();
        ++p->finished;
        throw flaky_failure(p->calls);
      },
      xcs::retry(4, 1ms));
  auto other = xcs::op("other", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) { return always(a) + other(a); });
  try {
    f(1);
    ADD_FAILURE() << "expected flaky_failure";
  } catch (const flaky_failure& e) {
    EXPECT_STREQ(e.what(), "attempt 4");
    EXPECT_EQ(e.origin, &e);
  }
  EXPECT_EQ(p->calls.load(), 4);
}

TEST(PolicyTest, RetryIfDecidesAndStopsAreNeverRetried) {
  auto p = std::make_shared<probe>();
  auto op = xcs::op(
      "op",
      [p](int kind) -> int {
        p->started();
        ++p->finished;
        if (kind == 0) throw std::logic_error("not transient");
        if (kind == 1) throw xcs::cancelled("cancelled by the op");
        throw std::runtime_error("transient");
      },
      xcs::retry(3, 1ms), xcs::retry_if([](const std::exception_ptr& e) {
        try {
          std::rethrow_exception(e);
        } catch (const std::runtime_error&) {
          return true;
        } catch (...) {
          return false;
        }
      }));
  auto other = xcs::op("other", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) { return op(a) + other(a); });
  EXPECT_THROW(f(0), std::logic_error);
  EXPECT_EQ(p->calls.exchange(0), 1);
  EXPECT_THROW(f(1), xcs::cancelled);
  EXPECT_EQ(p->calls.exchange(0), 1);
  EXPECT_THROW(f(2), std::runtime_error);
  EXPECT_EQ(p->calls.exchange(0), 3);
}

TEST(PolicyTest, NoRetryStartsAfterTheDeadline) {
  auto p = std::make_shared<probe>();
  auto op = xcs::op(
      "op",
      [p](int) -> int {
        p->started();
        ++p->finished;
        throw std::runtime_error("fails");
      },
      xcs::retry(5, 200ms));
  auto other = xcs::op("other", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) { return op(a) + other(a); });
  // The second attempt would start at a uniform time in [0, 200] ms: it is started only if
  // that is before the 50 ms deadline. Either way no attempt starts after it.
  for (int i = 0; i < 10; ++i) {
    const auto t0 = steady::now();
    try {
      f.with_deadline(50ms)(1);
    } catch (const xcs::deadline_exceeded&) {
    } catch (const std::runtime_error&) {
    }
    EXPECT_LT(ms_since(t0), 50.0 + 150.0);
  }
  std::lock_guard lock(p->m);
  // Starts are in calls of 50 ms: none later than 50 ms after its call's first.
  for (std::size_t i = 1; i < p->starts.size(); ++i) {
    if (p->starts[i] - p->starts[i - 1] < 55ms) continue;  // a new call
    EXPECT_GE(p->starts[i] - p->starts[i - 1], 0ms);
  }
}

TEST(PolicyTest, TimedOutAttemptFailsWithTimeoutErrorAndIsAskedToStop) {
  auto p = std::make_shared<probe>();
  auto slow = xcs::op(
      "slow",
      [p](int v, std::stop_token stop) {
        p->started();
        for (int i = 0; i < 300 && !stop.stop_requested(); ++i) sleep_ms(1);
        if (stop.stop_requested()) ++p->stopped;
        ++p->finished;
        return v;
      },
      xcs::timeout(40ms));
  auto other = xcs::op("other", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) { return slow(a) + other(a); });
  const auto t0 = steady::now();
  EXPECT_THROW(f(1), xcs::timeout_error);
  EXPECT_LT(ms_since(t0), 40.0 + 150.0);
  p->settle();
  EXPECT_EQ(p->stopped.load(), 1);
  xcs::stats s = f.stats();
  const auto& op = s.ops[0].name == "slow" ? s.ops[0] : s.ops[1];
  EXPECT_EQ(op.timeouts, 1u);
}

TEST(PolicyTest, TimeoutThenRetryReturnsTheSecondAttemptsValue) {
  auto p = std::make_shared<probe>();
  // The first attempt hangs (ignoring its token); the second answers at once.
  auto op = xcs::op(
      "op",
      [p](int v) {
        p->started();
        if (p->calls == 1) sleep_ms(300);
        ++p->finished;
        return std::string(static_cast<std::size_t>(v), 'x') + std::to_string(p->calls.load());
      },
      xcs::timeout(30ms), xcs::retry(2, 1ms));
  auto other = xcs::op("other", [](int v) { return std::to_string(v); });
  auto f = xcs::jit([&](auto a) { return op(a) + other(a); });
  const auto t0 = steady::now();
  EXPECT_EQ(f(3), "xxx23");
  EXPECT_LT(ms_since(t0), 30.0 + 150.0);
  xcs::stats s = f.stats();
  const auto& st = s.ops[0].name == "op" ? s.ops[0] : s.ops[1];
  EXPECT_EQ(st.timeouts, 1u);
  EXPECT_EQ(st.retries, 1u);
  p->settle();  // the first attempt ends on its own; its result is discarded
}

TEST(PolicyTest, AsyncOpsLateCompletionAfterItsTimeoutHasNoEffect) {
  struct held {
    std::mutex m;
    std::vector<xcs::completion<int>> done;
  };
  auto h = std::make_shared<held>();
  auto never = xcs::async_op(
      "never",
      [h](int, xcs::completion<int> done) {
        std::lock_guard lock(h->m);
        h->done.push_back(std::move(done));
      },
      xcs::timeout(30ms));
  auto other = xcs::op("other", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) { return never(a) + other(a); });
  const auto t0 = steady::now();
  EXPECT_THROW(f(1), xcs::timeout_error);
  EXPECT_LT(ms_since(t0), 30.0 + 150.0);
  {
    std::lock_guard lock(h->m);
    ASSERT_EQ(h->done.size(), 1u);
    h->done[0](42);  // too late: no effect, nothing leaks
    h->done.clear();
  }
  EXPECT_THROW(f(1), xcs::timeout_error);  // the run was not reused while its attempt ran
  std::lock_guard lock(h->m);
  h->done.clear();  // dropped: no effect either
}

TEST(PolicyTest, RateLimitBoundsStartsAndShowsItsWaits) {
  xcs::rate_limiter limiter(50, 5);  // starts full: 5 at once, then 50 per second
  std::atomic<int> starts{0};
  auto call = xcs::op(
      "call",
      [&starts](int v) {
        ++starts;
        return v;
      },
      xcs::rate_limit(limiter));
  auto f = xcs::jit([&](auto a) { return call(a) + call(a + 1) + call(a + 2) + call(a + 3); });
  const int threads_before = xcs_test::process_threads();
  const auto t0 = steady::now();
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      while (steady::now() - t0 < 600ms) f(1);
    });
  }
  for (auto& t : callers) t.join();
  const double took_s = ms_since(t0) / 1000.0;
  EXPECT_LE(starts.load(), static_cast<int>(50 * took_s) + 5);
  EXPECT_GE(starts.load(), static_cast<int>(0.8 * 50 * 0.6));
  xcs::stats s = f.stats();
  EXPECT_GT(s.ops[0].rate_wait_ns, 0u);
  // Nodes waiting for tokens hold no thread: at most a pool's worth more than before.
  EXPECT_LE(xcs_test::process_threads(), threads_before + 8);
}

TEST(PolicyTest, WeightedRateLimitTakesTheWeightAndRejectsMoreThanTheBurst) {
  xcs::rate_limiter limiter(1, 10);  // slow refill: the check below sees the take
  auto call = xcs::op(
      "tokens", [](int v) { return v; }, xcs::rate_limit(limiter, [](int v) { return v * 1.0; }));
  auto other = xcs::op("other", [](int v) { return v; });
  auto f = xcs::jit([&](auto a) { return call(a) + other(a); });
  EXPECT_EQ(f(8), 16);
  EXPECT_LT(limiter.available(), 3.0);  // 8 of 10 taken
  try {
    f(11);
    ADD_FAILURE() << "expected xcs::error";
  } catch (const xcs::timeout_error&) {
    ADD_FAILURE() << "bad input is not a timeout";
  } catch (const xcs::error& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("'tokens'"), std::string::npos) << what;
    EXPECT_NE(what.find("11"), std::string::npos) << what;
  }
  EXPECT_THROW(call(11), xcs::error);  // a direct call checks too
}

TEST(PolicyTest, PermitsGoToNodesInProgramOrder) {
  // With max_concurrency(2), op #0 of 6 always starts in the first pair, so that its failure
  // (the direct call's) is found first.
  std::mutex m;
  std::vector<int> order;
  auto op = xcs::op(
      "op",
      [&](int v) {
        {
          std::lock_guard lock(m);
          order.push_back(v);
        }
        sleep_ms(5);
        return v;
      },
      xcs::blocking, xcs::max_concurrency(2));
  auto f = xcs::jit([&](auto a) {
    std::vector<decltype(op(a))> r;
    for (int i = 0; i < 6; ++i) r.push_back(op(a + i));
    return r;
  });
  for (int call = 0; call < 10; ++call) {
    {
      std::lock_guard lock(m);
      order.clear();
    }
    f(0);
    std::lock_guard lock(m);
    ASSERT_EQ(order.size(), 6u);
    EXPECT_TRUE(order[0] == 0 || order[1] == 0) << "call " << call;
  }
}

TEST(PolicyTest, BadOptionsAreXcsErrorsNamingTheOpAndTheValue) {
  auto expect_error = [](auto make, const char* part) {
    try {
      make();
      ADD_FAILURE() << "expected xcs::error with " << part;
    } catch (const xcs::timeout_error&) {
      ADD_FAILURE() << "bad input is not a timeout";
    } catch (const xcs::error& e) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << e.what();
    }
  };
  auto fn = [](int v) { return v; };
  expect_error([&] { (void)xcs::op("named", fn, xcs::timeout(0ms)); }, "'named'");
  expect_error([&] { (void)xcs::op("named", fn, xcs::timeout(-3ms)); }, "-3 ms");
  expect_error([&] { (void)xcs::op("named", fn, xcs::retry(0, 1ms)); }, "(got 0)");
  expect_error([&] { (void)xcs::op("named", fn, xcs::retry(2, -1ms)); }, "-1 ms");
  expect_error([] { (void)xcs::rate_limiter(0, 5); }, "0");
  expect_error([] { (void)xcs::rate_limiter(10, 0.5); }, "0.5");
}

TEST(PolicyTest, DirectCallsRetryAndTakeTokens) {
  std::atomic<int> calls{0};
  xcs::rate_limiter limiter(5, 3);  // starts full: 3 tokens, then one per 200 ms
  auto flaky = xcs::op(
      "flaky",
      [&calls](int v) {
        if (++calls < 3) throw std::runtime_error("again");
        return v;
      },
      xcs::retry(3, 1ms), xcs::rate_limit(limiter));
  EXPECT_EQ(flaky(7), 7);
  EXPECT_EQ(calls.load(), 3);
  EXPECT_LT(limiter.available(), 0.5);  // three attempts, three tokens
}

TEST(PolicyTest, DirectRetriesGetTheArgumentsAsGivenNotMovedFrom) {
  std::vector<std::string> seen;
  auto keep = xcs::op(
      "keep",
      [&seen](std::string s) {
        seen.push_back(std::move(s));
        if (seen.size() < 3) throw std::runtime_error("again");
        return seen.size();
      },
      xcs::retry(3, 1ms));
  EXPECT_EQ(keep(std::string("a long enough string not to fit the small buffer")), 3u);
  ASSERT_EQ(seen.size(), 3u);
  for (const auto& s : seen) EXPECT_EQ(s, "a long enough string not to fit the small buffer");
}

TEST(PolicyTest, DirectCallsOfAnOpWithATimeoutStopItAndFailWithTimeoutError) {
  // A direct call cannot leave the op behind: stop is requested at the timeout, and the
  // instance fails with timeout_error when it returns, as a jitted call's would.
  std::atomic<bool> saw_stop{false};
  auto slow = xcs::op(
      "slow",
      [&saw_stop](int v, std::stop_token stop) {
        for (auto until = steady::now() + 5s; steady::now() < until && !stop.stop_requested();) {
          sleep_ms(1);
        }
        saw_stop = stop.stop_requested();
        if (saw_stop) throw std::runtime_error("aborted");  // what a client would throw
        return v;
      },
      xcs::timeout(50ms));
  const auto t0 = steady::now();
  EXPECT_THROW((void)slow(1), xcs::timeout_error);
  EXPECT_TRUE(saw_stop.load());
  EXPECT_LT(ms_since(t0), 50.0 + 500.0);
  auto quick = xcs::op(
      "quick", [](int v) { return v; }, xcs::timeout(1s));
  EXPECT_EQ(quick(7), 7);
  // An op that ignores its stop returns late: its result is discarded.
  auto stubborn = xcs::op(
      "stubborn",
      [](int v) {
        sleep_ms(80);
        return v;
      },
      xcs::timeout(20ms));
  EXPECT_THROW((void)stubborn(1), xcs::timeout_error);
}

TEST(PolicyTest, ExplainShowsEachOpsOptions) {
  xcs::rate_limiter limiter(18, 5);
  auto fetch = xcs::op(
      "fetch", [](int v) { return v; }, xcs::blocking, xcs::timeout(200ms), xcs::retry(3, 20ms),
      xcs::rate_limit(limiter));
  auto weighed = xcs::op(
      "weighed", [](int v) { return v; }, xcs::max_concurrency(2),
      xcs::retry_if([](const std::exception_ptr&) { return true; }), xcs::retry(2, 1s),
      xcs::rate_limit(limiter, [](int v) { return v * 0.5; }));
  auto plain = xcs::op("plain", [](int v) { return v; });
  auto f = xcs::jit([&](auto x) { return fetch(x) + weighed(x) + plain(x); });
  const std::string report = f.explain(1);
  EXPECT_THAT(report, testing::HasSubstr("fetch(arg0) -> int [blocking, timeout 200 ms, retry 3 "
                                         "attempts from 20 ms, rate_limit 18/s burst 5]"));
  EXPECT_THAT(report, testing::HasSubstr("weighed(arg0) -> int [max_concurrency 2, retry 2 "
                                         "attempts from 1 s if retry_if, rate_limit 18/s burst "
                                         "5 weighted]"));
  EXPECT_THAT(report, testing::HasSubstr("plain(arg0) -> int\n"));
}

/// A source of tokens that grants nothing and fails every wait with an xcs::error, from its
/// own thread, as a shared bucket does when its server cannot be reached: the contract a
/// remote source (xcs::redis_rate_limiter) holds the engine to.
class failing_source final : public xcs::detail::token_source {
 public:
  ~failing_source() override {
    for (auto& t : threads_) t.join();
  }
  double per_second() const noexcept override { return 10; }
  double burst() const noexcept override { return 5; }
  double available() const override { throw xcs::error("failing_source: unreachable"); }
  std::size_t waiting() const noexcept override { return 0; }
  bool acquire_or_queue(xcs::detail::token_waiter& w, std::uint32_t node, double,
                        std::uint64_t) override {
    std::lock_guard lock(m_);
    threads_.emplace_back([&w, node] {
      sleep_ms(5);  // after acquire_or_queue returned, as the contract says
      w.tokens_failed(node, std::make_exception_ptr(xcs::error("failing_source: unreachable")));
    });
    return false;
  }
  bool withdraw(xcs::detail::token_waiter&, std::uint32_t) noexcept override { return false; }
  bool acquire_blocking(double, xcs::detail::steady_time, std::stop_token) override {
    throw xcs::error("failing_source: unreachable");
  }

 private:
  std::mutex m_;
  std::vector<std::thread> threads_;
};

TEST(PolicyTest, ASourceThatFailsFailsTheOpWithItsError) {
  auto source = std::make_shared<failing_source>();
  xcs::rate_limiter limiter(source);
  std::atomic<int> ran{0};
  auto limited = xcs::op(
      "limited",
      [&ran](int v) {
        ++ran;
        return v;
      },
      xcs::rate_limit(limiter));
  auto free = xcs::op("free", [](int v) { return v + 1; });
  auto f = xcs::jit([&](int x) { return limited(x) + free(x); });
  for (int round = 0; round < 3; ++round) {  // the trace's call, then the plan's
    try {
      (void)f(1);
      ADD_FAILURE() << "no exception";
    } catch (const xcs::error& e) {
      EXPECT_THAT(e.what(), testing::HasSubstr("unreachable"));
    }
  }
  EXPECT_EQ(ran.load(), 0);
  EXPECT_THROW((void)limited(1), xcs::error);  // the direct call
  EXPECT_EQ(ran.load(), 0);
  EXPECT_THROW((void)xcs::rate_limiter(nullptr), xcs::error);
}

}  // namespace
