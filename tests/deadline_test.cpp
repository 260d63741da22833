// SPDX-License-Identifier: MIT
// Deadlines, cancellation and fail fast: a call ends at its deadline, at a stop, or as soon as
// its first failure in program order is known; no op starts after that, running ops are asked
// to stop (their std::stop_token, an async op's completion.stop_token()), and ops stuck in
// user code are left behind. Bounds are generous: this machine has 2 noisy cores.
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <memory>
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

/// What the ops of a test share with it. Held by shared_ptr and captured by value: an op left
/// behind may outlive the call, and must not outlive what it touches.
struct probe {
  std::atomic<int> started{0}, finished{0}, stopped{0}, later_runs{0};
  /// Waits until every started instance has finished (left-behind ones end on their own).
  void settle() const {
    for (auto until = xcs_test::give_up(); steady::now() < until;) {
      if (finished.load() == started.load()) break;
      sleep_ms(1);
    }
    sleep_ms(10);  // one that passed its start check as its call ended
  }
};

/// Sleeps `ms`, ignoring any stop: an op stuck in user code.
auto stuck_op(std::shared_ptr<probe> p, int ms) {
  return xcs::op(
      "stuck",
      [p, ms](int v) {
        ++p->started;
        sleep_ms(ms);
        ++p->finished;
        return v;
      },
      xcs::blocking);
}

/// Waits up to `ms`, returning early when its instance is asked to stop.
auto stoppable_op(std::shared_ptr<probe> p, int ms) {
  return xcs::op(
      "stoppable",
      [p, ms](int v, std::stop_token stop) {
        ++p->started;
        for (int i = 0; i < ms && !stop.stop_requested(); ++i) sleep_ms(1);
        if (stop.stop_requested()) ++p->stopped;
        ++p->finished;
        return v;
      },
      xcs::blocking);
}

TEST(DeadlineTest, BlockingOpStuckInUserCodeEndsTheCallAtTheDeadline) {
  auto p = std::make_shared<probe>();
  auto stuck = stuck_op(p, 1500);
  auto f = xcs::jit([&](auto a, auto b) { return stuck(a) + stuck(b); });
  EXPECT_EQ(f(1, 2), 3);  // the plan is compiled; 1.5 s
  p->settle();
  for (int call = 0; call < 3; ++call) {
    const auto t0 = steady::now();
    EXPECT_THROW(f.with_deadline(100ms)(1, 2), xcs::deadline_exceeded);
    const double took = ms_since(t0);
    EXPECT_GE(took, 95.0);
    EXPECT_LT(took, 100.0 + 150.0) << "call " << call;
  }
  EXPECT_EQ(f.stats().deadline_exceeded_calls, 3u);
  EXPECT_NE(xcs::to_string(f.stats()).find("deadline_exceeded_calls=3 cancelled_calls=0"),
            std::string::npos);
  EXPECT_EQ(f.stats().cancelled_calls, 0u);
  p->settle();
}

TEST(DeadlineTest, TheOpsTokenIsRequestedAtTheDeadline) {
  auto p = std::make_shared<probe>();
  auto wait = stoppable_op(p, 2000);
  auto f = xcs::jit([&](auto a, auto b) { return wait(a) + wait(b); });
  // Long enough for an op to start first on a loaded machine under TSan (none had started
  // after 50 ms there once).
  constexpr auto deadline = 300ms;
  const auto t0 = steady::now();
  EXPECT_THROW(f.with_deadline(deadline)(1, 2), xcs::deadline_exceeded);
  EXPECT_LT(ms_since(t0), 300.0 + 150.0);
  p->settle();
  EXPECT_EQ(p->stopped.load(), p->started.load());
  EXPECT_GT(p->started.load(), 0);
}

TEST(DeadlineTest, NoOpStartsAfterTheDeadline) {
  auto p = std::make_shared<probe>();
  auto stuck = stuck_op(p, 300);
  auto later = xcs::op("later", [p](int v) {
    ++p->later_runs;
    return v;
  });
  auto f = xcs::jit([&](auto a, auto b) { return later(stuck(a)) + later(stuck(b)); });
  EXPECT_THROW(f.with_deadline(50ms)(1, 2), xcs::deadline_exceeded);
  p->settle();
  sleep_ms(50);
  EXPECT_EQ(p->later_runs.load(), 0) << "an op started after the deadline";
}

TEST(DeadlineTest, CallDoneInTimeReturnsItsValue) {
  auto add = xcs::op("add", [](int a, int b) { return a + b; });
  auto f = xcs::jit([&](auto a, auto b) { return add(a, b) * add(b, a); });
  auto bounded = f.with_deadline(10s);
  for (int i = 0; i < 100; ++i) EXPECT_EQ(bounded(i, 1), (i + 1) * (i + 1));
  EXPECT_EQ(f.stats().deadline_exceeded_calls, 0u);
}

TEST(DeadlineTest, StopRequestedEndsTheCallWithCancelled) {
  auto p = std::make_shared<probe>();
  auto wait = stoppable_op(p, 2000);
  auto f = xcs::jit([&](auto a, auto b) { return wait(a) + wait(b); });
  std::stop_source source;
  std::thread stopper([&] {
    sleep_ms(60);
    source.request_stop();
  });
  const auto t0 = steady::now();
  EXPECT_THROW(f.with_stop_token(source.get_token())(1, 2), xcs::cancelled);
  const double took = ms_since(t0);
  stopper.join();
  EXPECT_GE(took, 55.0);
  EXPECT_LT(took, 60.0 + 150.0);
  EXPECT_EQ(f.stats().cancelled_calls, 1u);
  p->settle();
  EXPECT_EQ(p->stopped.load(), p->started.load());
}

TEST(DeadlineTest, StopAlreadyRequestedRunsNoOp) {
  auto p = std::make_shared<probe>();
  auto wait = stoppable_op(p, 10);
  auto f = xcs::jit([&](auto a, auto b) { return wait(a) + wait(b); });
  EXPECT_EQ(f(1, 2), 3);
  p->settle();
  const int before = p->started.load();
  std::stop_source source;
  source.request_stop();
  EXPECT_THROW(f.with_stop_token(source.get_token())(1, 2), xcs::cancelled);
  p->settle();
  EXPECT_EQ(p->started.load(), before);
}

TEST(DeadlineTest, AsyncOpsCompletionTokenIsRequestedAtTheDeadline) {
  struct pending {
    std::mutex m;
    std::vector<std::unique_ptr<std::stop_callback<std::function<void()>>>> callbacks;
    std::atomic<int> stopped{0};
    std::vector<steady::time_point> when;
  };
  auto state = std::make_shared<pending>();
  // Never completes on its own: completes with an error when asked to stop.
  auto hang = xcs::async_op("hang", [state](int, xcs::completion<int> done) {
    auto token = done.stop_token();
    auto shared = std::make_shared<xcs::completion<int>>(std::move(done));
    std::lock_guard lock(state->m);
    state->callbacks.push_back(std::make_unique<std::stop_callback<std::function<void()>>>(
        token, std::function<void()>([state, shared] {
          state->stopped.fetch_add(1);
          shared->fail(std::make_exception_ptr(std::runtime_error("aborted")));
        })));
  });
  auto f = xcs::jit([&](auto a, auto b) { return hang(a) + hang(b); });
  const auto t0 = steady::now();
  EXPECT_THROW(f.with_deadline(80ms)(1, 2), xcs::deadline_exceeded);
  EXPECT_LT(ms_since(t0), 80.0 + 150.0);
  EXPECT_EQ(state->stopped.load(), 2) << "the stop callbacks ran by the time the call returned";
  std::lock_guard lock(state->m);
  state->callbacks.clear();
}

TEST(DeadlineTest, StagedReadThatWaitsThrowsAtTheDeadline) {
  auto p = std::make_shared<probe>();
  auto stuck = stuck_op(p, 1000);
  auto f = xcs::jit([&](auto a, auto b) {
    auto x = stuck(a);
    auto y = stuck(b);
    if (x > 0) return x + y;  // a read: the signature runs staged
    return y;
  });
  const auto t0 = steady::now();
  EXPECT_THROW(f.with_deadline(100ms)(1, 2), xcs::deadline_exceeded);
  EXPECT_LT(ms_since(t0), 100.0 + 150.0);
  p->settle();
  const auto t1 = steady::now();
  EXPECT_THROW(f.with_deadline(100ms)(1, 2), xcs::deadline_exceeded);
  EXPECT_LT(ms_since(t1), 100.0 + 150.0);
  EXPECT_GE(f.stats().staged_calls, 1u);
  EXPECT_EQ(f.stats().deadline_exceeded_calls, 2u);
  p->settle();
}

TEST(DeadlineTest, NestedCallInheritsWhatIsLeftOfTheDeadline) {
  auto p = std::make_shared<probe>();
  auto wait = stoppable_op(p, 3000);
  auto inner = xcs::jit([&](auto a) { return wait(a) + wait(a + 1); });
  std::atomic<int> inner_deadline{0};
  auto outer_op = xcs::op(
      "outer",
      [&inner, &inner_deadline](int v) {
        try {
          return inner(v);  // no deadline of its own: inherits the outer one
        } catch (const xcs::deadline_exceeded&) {
          ++inner_deadline;
          throw;
        }
      },
      xcs::blocking);
  auto f = xcs::jit([&](auto a, auto b) { return outer_op(a) + outer_op(b); });
  const auto t0 = steady::now();
  EXPECT_THROW(f.with_deadline(100ms)(1, 2), xcs::deadline_exceeded);
  EXPECT_LT(ms_since(t0), 100.0 + 150.0);
  // The inner calls end at the same deadline (not 3 s later), in their own threads.
  for (auto until = xcs_test::give_up(); steady::now() < until && inner_deadline.load() < 2;) {
    sleep_ms(1);
  }
  EXPECT_EQ(inner_deadline.load(), 2);
  EXPECT_LT(ms_since(t0), 100.0 + 500.0);
  p->settle();
}

TEST(DeadlineTest, FallbackCallChecksTheDeadlineAtEachOp) {
  auto p = std::make_shared<probe>();
  auto stuck = stuck_op(p, 60);
  // Plain-typed: falls back, so the body runs directly and ops run one after another.
  auto f = xcs::jit([&](int a, int b) { return stuck(a) + stuck(b) + stuck(a + b); });
  EXPECT_EQ(f(1, 2), 6);
  const auto t0 = steady::now();
  EXPECT_THROW(f.with_deadline(90ms)(1, 2), xcs::deadline_exceeded);
  const double took = ms_since(t0);
  EXPECT_GE(took, 90.0);
  EXPECT_LT(took, 130.0 + 150.0) << "the op after the deadline ran";
  EXPECT_GT(f.stats().fallback_calls, 0u);
  EXPECT_EQ(f.stats().deadline_exceeded_calls, 1u);
}

TEST(DeadlineTest, AnEarlierOpsExceptionWinsOverTheDeadline) {
  auto p = std::make_shared<probe>();
  auto stuck = stuck_op(p, 1000);
  auto fail = xcs::op("fail", [](int v) -> int {
    sleep_ms(10);
    throw std::runtime_error("op " + std::to_string(v));
  });
  // fail comes first in program order and throws before the deadline: the direct call throws
  // it. With the stuck op first, the deadline comes before the direct call reaches `fail`.
  // (Separate statements: the operands of + are not sequenced.)
  auto first_fails = xcs::jit([&](auto a, auto b) {
    auto x = fail(a);
    auto y = stuck(b);
    return x + y;
  });
  auto first_stuck = xcs::jit([&](auto a, auto b) {
    auto x = stuck(a);
    auto y = fail(b);
    return x + y;
  });
  EXPECT_THROW(first_fails.with_deadline(200ms)(1, 2), std::runtime_error);
  EXPECT_THROW(first_stuck.with_deadline(100ms)(1, 2), xcs::deadline_exceeded);
  p->settle();
}

TEST(DeadlineTest, FailFastRethrowsTheFirstFailureAtOnceAndStopsTheOthers) {
  auto p = std::make_shared<probe>();
  // A sibling that is not stopped runs 1 s; the bound leaves 400 ms for the first call's trace
  // under TSan on a loaded machine (a 200 ms sibling and a 130 ms bound failed there: 182 ms).
  auto wait = stoppable_op(p, 1000);
  auto fail = xcs::op(
      "fail",
      [](int) -> int {
        sleep_ms(10);
        throw std::runtime_error("first");
      },
      xcs::blocking);
  auto f = xcs::jit([&](auto a) {
    auto first = fail(a);  // op #0 of 6 in program order
    std::vector<decltype(first)> rest;
    for (int i = 0; i < 5; ++i) rest.push_back(wait(a + i));
    return first + rest[0] + rest[1] + rest[2] + rest[3] + rest[4];
  });
  for (int call = 0; call < 3; ++call) {
    const auto t0 = steady::now();
    try {
      f(1);
      ADD_FAILURE() << "expected the op's exception";
    } catch (const std::runtime_error& e) {
      EXPECT_STREQ(e.what(), "first");
    }
    EXPECT_LT(ms_since(t0), 10.0 + 400.0) << "call " << call << " waited for a sibling";
  }
  p->settle();
  EXPECT_EQ(p->stopped.load(), p->started.load()) << "a sibling was not asked to stop";
}

TEST(DeadlineTest, BadDeadlinesAreXcsErrorsNamingTheValue) {
  auto f = xcs::jit([](auto a) { return a; });
  try {
    (void)f.with_deadline(0ms);
    ADD_FAILURE() << "expected xcs::error";
  } catch (const xcs::deadline_exceeded&) {
    ADD_FAILURE() << "bad input is not a deadline";
  } catch (const xcs::error& e) {
    EXPECT_NE(std::string(e.what()).find("0 ns"), std::string::npos) << e.what();
  }
  try {
    (void)f.with_deadline(-5ms);
    ADD_FAILURE() << "expected xcs::error";
  } catch (const xcs::error& e) {
    EXPECT_NE(std::string(e.what()).find("-5 ms"), std::string::npos) << e.what();
  }
}

TEST(DeadlineTest, ManyCallsThatHitTheirDeadlineLeaveNoThreadBehind) {
  auto p = std::make_shared<probe>();
  auto wait = stoppable_op(p, 1000);
  auto quick = xcs::op("quick", [](int v) { return v + 1; });
  auto f = xcs::jit([&](auto a, auto b) { return wait(a) + quick(b); });
  EXPECT_THROW(f.with_deadline(5ms)(1, 2), xcs::deadline_exceeded);
  p->settle();
  sleep_ms(50);
  const int threads = xcs_test::process_threads();
  for (int i = 0; i < 200; ++i) {
    EXPECT_THROW(f.with_deadline(2ms)(1, 2), xcs::deadline_exceeded);
  }
  p->settle();
  sleep_ms(50);
  EXPECT_LE(xcs_test::process_threads_settled(threads + 2), threads + 2);
  EXPECT_EQ(p->stopped.load(), p->started.load());
}

}  // namespace
