// SPDX-License-Identifier: MIT
// Batch ops: calls that can go together reach the batch function as one batch (by dependency
// level in a plan, by what was recorded since the last wait in a staged call), equal inputs
// are sent once, and every call gets its own result or the batch's exception.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <numeric>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "test_support.hpp"
#include "xcs/xcs.hpp"

namespace {

using ::testing::HasSubstr;
using namespace std::chrono_literals;

/// A batch function that doubles its inputs and records each batch it was sent.
struct recorder {
  std::mutex m;
  std::vector<std::vector<int>> batches;
  std::vector<int> operator()(const std::vector<int>& in) {
    {
      std::lock_guard lock(m);
      batches.push_back(in);
    }
    std::vector<int> out;
    out.reserve(in.size());
    for (int x : in) out.push_back(2 * x);
    return out;
  }
  std::size_t count() {
    std::lock_guard lock(m);
    return batches.size();
  }
  std::vector<std::size_t> sizes() {
    std::lock_guard lock(m);
    std::vector<std::size_t> s;
    for (const auto& b : batches) s.push_back(b.size());
    return s;
  }
  void clear() {
    std::lock_guard lock(m);
    batches.clear();
  }
};

/// A batch op over `r` (kept alive by the caller).
template <class... Options>
auto doubling(recorder& r, Options... options) {
  return xcs::batch_op(
      "double", [&r](const std::vector<int>& in) { return r(in); }, options...);
}

std::vector<int> iota(int n, int from = 0) {
  std::vector<int> v(static_cast<std::size_t>(n));
  std::iota(v.begin(), v.end(), from);
  return v;
}

std::vector<int> doubled(const std::vector<int>& v) {
  std::vector<int> out;
  for (int x : v) out.push_back(2 * x);
  return out;
}

/// An op the body reads first, so that the call runs staged.
auto plain_size =
    xcs::op("size", [](const std::vector<int>& v) { return static_cast<int>(v.size()); });

TEST(BatchOpTest, DirectCallSendsABatchOfOne) {
  recorder r;
  auto twice = doubling(r);
  EXPECT_EQ(twice(21), 42);
  ASSERT_EQ(r.count(), 1u);
  EXPECT_EQ(r.batches[0], std::vector<int>{21});
}

TEST(BatchOpTest, PlanSendsAThousandIndependentCallsInTenBatches) {
  recorder r;
  auto twice = doubling(r, xcs::max_batch(100));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(twice, v); });
  const auto v = iota(1000);
  for (int call = 0; call < 3; ++call) {
    r.clear();
    EXPECT_EQ(f(v), doubled(v));
    EXPECT_EQ(r.count(), 10u) << "call " << call;
    EXPECT_THAT(r.sizes(), ::testing::Each(100u));
  }
  const auto s = f.stats();
  EXPECT_GE(s.plan_runs, 3u);
  ASSERT_EQ(s.ops.size(), 1u);
  EXPECT_EQ(s.ops[0].name, "double");
  EXPECT_EQ(s.ops[0].calls, 3000u);
  EXPECT_EQ(s.ops[0].batches, 30u);
}

TEST(BatchOpTest, StagedCallSendsAThousandRecordedCallsInTenBatches) {
  recorder r;
  auto twice = doubling(r, xcs::max_batch(100));
  auto f = xcs::jit([&](const auto& v) {
    using result = decltype(xcs::map(twice, v));
    if (static_cast<int>(plain_size(v)) == 0) return result{};
    return xcs::map(twice, v);
  });
  const auto v = iota(1000);
  for (int call = 0; call < 3; ++call) {
    r.clear();
    EXPECT_EQ(f(v), doubled(v));
    EXPECT_EQ(r.count(), 10u) << "call " << call;
  }
  EXPECT_GE(f.stats().staged_calls, 3u);
}

TEST(BatchOpTest, TwoDependentLevelsAreTwoBatches) {
  recorder r;
  auto twice = doubling(r);
  auto plan = xcs::jit([&](const auto& v) { return xcs::map(twice, xcs::map(twice, v)); });
  auto staged = xcs::jit([&](const auto& v) {
    using result = decltype(xcs::map(twice, v));
    if (static_cast<int>(plain_size(v)) == 0) return result{};
    return xcs::map(twice, xcs::map(twice, v));
  });
  const auto v = iota(100);
  const auto want = doubled(doubled(v));
  for (int call = 0; call < 3; ++call) {
    r.clear();
    EXPECT_EQ(plan(v), want);
    EXPECT_EQ(r.sizes(), (std::vector<std::size_t>{100, 100})) << "plan, call " << call;
    r.clear();
    EXPECT_EQ(staged(v), want);
    EXPECT_EQ(r.sizes(), (std::vector<std::size_t>{100, 100})) << "staged, call " << call;
  }
  EXPECT_GE(plan.stats().plan_runs, 3u);
  EXPECT_GE(staged.stats().staged_calls, 3u);
}

TEST(BatchOpTest, EqualInputsAreSentOnceAndEveryCallerGetsItsResult) {
  recorder r;
  auto twice = doubling(r);
  auto f = xcs::jit([&](const auto& v) { return xcs::map(twice, v); });
  const std::vector<int> v{1, 1, 2, 2, 3};
  for (int call = 0; call < 2; ++call) {
    r.clear();
    EXPECT_EQ(f(v), (std::vector<int>{2, 2, 4, 4, 6}));
    ASSERT_EQ(r.count(), 1u);
    EXPECT_EQ(r.batches[0], (std::vector<int>{1, 2, 3}));
  }
  const auto s = f.stats();
  ASSERT_EQ(s.ops.size(), 1u);
  EXPECT_EQ(s.ops[0].calls, 10u);
  EXPECT_EQ(s.ops[0].batches, 2u);
  EXPECT_EQ(s.ops[0].deduplicated, 4u);
  EXPECT_THAT(xcs::to_string(f.stats()), HasSubstr("deduplicated=4"));
}

TEST(BatchOpTest, EqualStringsEachGetTheirOwnCopy) {
  std::atomic<int> sent{0};
  auto upper = xcs::batch_op("upper", [&](const std::vector<std::string>& in) {
    sent += static_cast<int>(in.size());
    std::vector<std::string> out;
    for (auto s : in) {
      for (char& c : s) c = static_cast<char>(c - 32);
      out.push_back(s);
    }
    return out;
  });
  auto f = xcs::jit([&](const auto& v) { return xcs::map(upper, v); });
  std::vector<std::string> v{"abc", "abc", "de", "abc"};
  EXPECT_EQ(f(v), (std::vector<std::string>{"ABC", "ABC", "DE", "ABC"}));
  EXPECT_EQ(sent.load(), 2);
}

struct boom : std::runtime_error {
  using std::runtime_error::runtime_error;
};

TEST(BatchOpTest, AThrowingBatchFailsEveryCallWithTheSameException) {
  auto original = std::make_exception_ptr(boom("the batch failed"));
  std::atomic<int> batches{0};
  auto fails = xcs::batch_op("fails", [&](const std::vector<int>&) -> std::vector<int> {
    ++batches;
    std::rethrow_exception(original);
  });
  auto f = xcs::jit([&](const auto& v) { return xcs::map(fails, v); });
  for (int call = 0; call < 2; ++call) {
    try {
      f(iota(10));
      FAIL() << "no exception";
    } catch (const boom&) {
      EXPECT_EQ(std::current_exception(), original);
    }
  }
  EXPECT_EQ(batches.load(), 2);
  try {
    fails(1);
    FAIL() << "no exception";
  } catch (const boom&) {
    EXPECT_EQ(std::current_exception(), original);
  }
}

TEST(BatchOpTest, AResultOfTheWrongSizeNamesTheOpAndBothSizes) {
  auto short_by_one = xcs::batch_op(
      "short", [](const std::vector<int>& in) { return std::vector<int>(in.size() - 1, 0); });
  auto f = xcs::jit([&](const auto& v) { return xcs::map(short_by_one, v); });
  try {
    f(iota(3));
    FAIL() << "no exception";
  } catch (const xcs::error& e) {
    EXPECT_THAT(e.what(), HasSubstr("'short'"));
    EXPECT_THAT(e.what(), HasSubstr("returned 2 results for 3 inputs"));
  }
  try {
    short_by_one(7);
    FAIL() << "no exception";
  } catch (const xcs::error& e) {
    EXPECT_THAT(e.what(), HasSubstr("returned 0 results for 1 inputs"));
  }
}

/// One thread that completes async batches after a delay: the event loop of these tests.
class completer {
 public:
  ~completer() {
    for (auto& t : threads_) t.join();
  }
  void later(std::shared_ptr<xcs::completion<std::vector<int>>> done, std::vector<int> out) {
    std::lock_guard lock(m_);
    threads_.emplace_back([done, out] {
      std::this_thread::sleep_for(5ms);
      (*done)(out);
    });
  }

 private:
  std::mutex m_;
  std::vector<std::thread> threads_;
};

TEST(BatchOpTest, AsyncBatchFunctionHoldsNoThreadAndBatchesLikeASyncOne) {
  completer loop;
  std::atomic<int> batches{0};
  auto twice = xcs::batch_op(
      "async double",
      [&](const std::vector<int>& in, xcs::completion<std::vector<int>> done) {
        ++batches;
        loop.later(std::make_shared<xcs::completion<std::vector<int>>>(std::move(done)),
                   doubled(in));
      },
      xcs::max_batch(100));
  auto plan = xcs::jit([&](const auto& v) { return xcs::map(twice, v); });
  auto staged = xcs::jit([&](const auto& v) {
    using result = decltype(xcs::map(twice, v));
    if (static_cast<int>(plain_size(v)) == 0) return result{};
    return xcs::map(twice, xcs::map(twice, v));
  });
  const auto v = iota(1000);
  EXPECT_EQ(plan(v), doubled(v));
  EXPECT_EQ(batches.exchange(0), 10);
  EXPECT_EQ(staged(v), doubled(doubled(v)));
  EXPECT_EQ(batches.exchange(0), 20);
  EXPECT_EQ(twice(5), 10);
  EXPECT_EQ(batches.load(), 1);
  EXPECT_TRUE(plan.stats().ops.at(0).async);
}

TEST(BatchOpTest, JittedResultEqualsTheDirectCall) {
  recorder r;
  auto twice = doubling(r, xcs::max_batch(7));
  auto inc = xcs::op("inc", [](const int& x) { return x + 1; });
  auto body = [&](const auto& v) {
    std::vector<decltype(twice(v[0]))> out;
    for (std::size_t i = 0; i < v.size(); ++i) {
      out.push_back(i % 3 == 0 ? twice(inc(v[i])) : twice(v[i]));
    }
    return xcs::map(twice, out);
  };
  auto f = xcs::jit(body);
  const auto v = iota(50, -10);
  const auto direct = body(v);
  EXPECT_EQ(f(v), direct);
  EXPECT_EQ(f(v), direct);
}

TEST(BatchOpTest, SkippedCallsDoNotHoldTheirBatch) {
  // The first level's op throws for one element: its dependents are skipped, and the second
  // level's batch goes without them; the call rethrows the op's exception.
  recorder r;
  auto twice = doubling(r);
  auto check = xcs::op("check", [](const int& x) {
    if (x == 3) throw boom("three");
    return x;
  });
  auto f = xcs::jit([&](const auto& v) { return xcs::map(twice, xcs::map(check, v)); });
  EXPECT_THROW(f(iota(10)), boom);
  EXPECT_EQ(f(iota(3)), (std::vector<int>{0, 2, 4}));
}

TEST(BatchOpTest, OptionsApplyPerBatch) {
  recorder r;
  std::atomic<int> in_flight{0}, peak{0};
  auto bounded = xcs::batch_op(
      "bounded",
      [&](const std::vector<int>& in) {
        int now = ++in_flight;
        int p = peak.load();
        while (now > p && !peak.compare_exchange_weak(p, now)) {
        }
        std::this_thread::sleep_for(2ms);
        --in_flight;
        return r(in);
      },
      xcs::max_batch(10), xcs::max_concurrency(1), xcs::blocking);
  auto f = xcs::jit([&](const auto& v) { return xcs::map(bounded, v); });
  const auto v = iota(100);
  EXPECT_EQ(f(v), doubled(v));
  EXPECT_EQ(r.count(), 10u);
  EXPECT_EQ(peak.load(), 1);
}

TEST(BatchOpTest, RateLimitWeightIsComputedOverTheBatch) {
  std::atomic<double> weighed{0};
  xcs::rate_limiter limiter(1000, 1000);
  auto twice = xcs::batch_op(
      "weighed", [](const std::vector<int>& in) { return doubled(in); }, xcs::max_batch(50),
      xcs::rate_limit(limiter, [&](const std::vector<int>& in) {
        weighed = weighed + static_cast<double>(in.size());
        return static_cast<double>(in.size());
      }));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(twice, v); });
  EXPECT_EQ(f(iota(100)), doubled(iota(100)));
  EXPECT_EQ(weighed.load(), 100.0);
}

}  // namespace

namespace {

TEST(BatchOpTest, ExplainShowsTheBatchesLevelByLevelAndDotDrawsThem) {
  recorder r;
  auto twice = doubling(r, xcs::max_batch(4));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(twice, xcs::map(twice, v)); });
  const auto v = iota(10);
  const std::string e = f.explain(v);
  EXPECT_THAT(e, HasSubstr("batches (calls per batch, level by level):\n"
                           "  level 1: 'double' x 4 4 2\n"
                           "  level 2: 'double' x 4 4 2\n"));
  const std::string d = f.dot(v);
  EXPECT_THAT(d, HasSubstr("subgraph cluster_batch0 {"));
  EXPECT_THAT(d, HasSubstr("label=\"batch 5: double\""));
  EXPECT_THAT(d, ::testing::Not(HasSubstr("cluster_batch6")));
}

}  // namespace

namespace {

/// 8 threads each make one direct call of one item at the same moment; returns the batches.
template <class Op>
int eight_calls_at_once(const Op& op, recorder& r) {
  r.clear();
  std::vector<std::thread> threads;
  std::atomic<int> ready{0};
  std::atomic<int> wrong{0};
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      ++ready;
      while (ready.load() < 8) std::this_thread::yield();
      if (op(t) != 2 * t) ++wrong;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(wrong.load(), 0);
  return static_cast<int>(r.count());
}

TEST(BatchOpTest, AWindowGathersConcurrentCallsFromOtherThreads) {
  recorder r;
  auto windowed = doubling(r, xcs::batch_window(50ms));
  // The threads start within the window (generous for a loaded machine): at most a few batches.
  EXPECT_LE(eight_calls_at_once(windowed, r), 4);
  std::size_t items = 0;
  for (auto s : r.sizes()) items += s;
  EXPECT_EQ(items, 8u);
  auto plain = doubling(r);
  EXPECT_EQ(eight_calls_at_once(plain, r), 8);
}

TEST(BatchOpTest, AWindowSendsAFullBatchAtOnceAndJoinsJittedCalls) {
  recorder r;
  auto windowed = doubling(r, xcs::batch_window(10s), xcs::max_batch(10));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(windowed, v); });
  const auto v = iota(20);
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(f(v), doubled(v));  // two full batches: nothing waits for the 10 s window
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  EXPECT_EQ(r.sizes(), (std::vector<std::size_t>{10, 10}));
}

TEST(BatchOpTest, AWindowEndsOnItsTimerForAStagedCall) {
  recorder r;
  auto windowed = doubling(r, xcs::batch_window(20ms));
  auto f = xcs::jit([&](const auto& v) {
    using result = decltype(xcs::map(windowed, v));
    if (static_cast<int>(plain_size(v)) == 0) return result{};
    return xcs::map(windowed, v);
  });
  const auto v = iota(30);
  EXPECT_EQ(f(v), doubled(v));
  EXPECT_EQ(r.count(), 1u);
  EXPECT_THROW(xcs::batch_window(0ms), xcs::error);
  EXPECT_THROW(xcs::max_batch(0), xcs::error);
}

}  // namespace

namespace {

TEST(BatchOpTest, ARetryResendsTheWholeBatch) {
  std::mutex m;
  std::vector<std::size_t> sizes;
  auto flaky = xcs::batch_op(
      "flaky",
      [&](const std::vector<int>& in) {
        std::lock_guard lock(m);
        sizes.push_back(in.size());
        if (sizes.size() == 1) throw boom("first attempt");
        return doubled(in);
      },
      xcs::retry(2, 1ms));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(flaky, v); });
  EXPECT_EQ(f(iota(5)), doubled(iota(5)));
  EXPECT_EQ(sizes, (std::vector<std::size_t>{5, 5}));
}

TEST(BatchOpTest, AnAsyncBatchFailedThroughItsCompletionFailsEveryCall) {
  auto original = std::make_exception_ptr(boom("the request failed"));
  std::mutex m;
  std::vector<std::thread> requests;
  auto fails = xcs::batch_op(
      "fails async", [&](const std::vector<int>&, xcs::completion<std::vector<int>> done) {
        std::lock_guard lock(m);
        requests.emplace_back([d = std::move(done), original]() mutable { d.fail(original); });
      });
  auto f = xcs::jit([&](const auto& v) { return xcs::map(fails, v); });
  for (int call = 0; call < 3; ++call) {
    try {
      f(iota(20));
      FAIL() << "no exception";
    } catch (const boom&) {
      EXPECT_EQ(std::current_exception(), original);
    }
  }
  std::lock_guard lock(m);
  EXPECT_EQ(requests.size(), 3u);
  for (auto& t : requests) t.join();
}

}  // namespace

namespace {

/// An async batch function that keeps each batch's completion for the test to call later, and
/// records whether stop was requested on it. With `fail_on_stop`, a stop fails the batch at once
/// (a request aborted through the completion's stop_token).
struct held_batches {
  explicit held_batches(bool fail_on_stop = false) : fail_on_stop_(fail_on_stop) {}
  ~held_batches() {
    std::lock_guard lock(m);
    on_stop.clear();
  }
  void operator()(const std::vector<int>& in, xcs::completion<std::vector<int>> done) {
    std::lock_guard lock(m);
    inputs.push_back(in);
    auto d = std::make_shared<xcs::completion<std::vector<int>>>(std::move(done));
    completions.push_back(d);
    // The callback takes no lock: it may run here (a stop already requested) or on the
    // thread that requests the stop.
    on_stop.push_back(std::make_unique<std::stop_callback<std::function<void()>>>(
        d->stop_token(), std::function<void()>([this, d] {
          ++stopped;
          if (fail_on_stop_) d->fail(std::make_exception_ptr(boom("stopped")));
        })));
  }
  std::size_t count() {
    std::lock_guard lock(m);
    return inputs.size();
  }
  /// Completes batch `i` with its inputs doubled.
  void complete(std::size_t i) {
    std::shared_ptr<xcs::completion<std::vector<int>>> d;
    std::vector<int> in;
    {
      std::lock_guard lock(m);
      d = completions.at(i);
      in = inputs.at(i);
    }
    (*d)(doubled(in));
  }

  std::mutex m;
  std::vector<std::vector<int>> inputs;
  std::vector<std::shared_ptr<xcs::completion<std::vector<int>>>> completions;
  std::vector<std::unique_ptr<std::stop_callback<std::function<void()>>>> on_stop;
  std::atomic<int> stopped{0};

 private:
  bool fail_on_stop_;
};

/// An async batch op whose function hands each batch to `held`.
template <class... Options>
auto holding(const char* name, held_batches& held, Options... options) {
  return xcs::batch_op(
      name,
      [&held](const std::vector<int>& in, xcs::completion<std::vector<int>> done) {
        held(in, std::move(done));
      },
      options...);
}

TEST(BatchOpTest, AnAsyncBatchThatTimesOutFailsEveryCallAndIsStopped) {
  held_batches held(true);
  auto slow = holding("slow async", held, xcs::timeout(50ms));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(slow, v); });
  for (int call = 0; call < 2; ++call) {
    const auto t0 = std::chrono::steady_clock::now();
    try {
      f(iota(10));
      FAIL() << "no exception";
    } catch (const xcs::timeout_error& e) {
      EXPECT_THAT(e.what(), HasSubstr("op 'slow async' timed out after 50 ms"));
    }
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 5s);
  }
  EXPECT_EQ(held.count(), 2u);
  EXPECT_EQ(held.stopped.load(), 2);
  const auto s = f.stats();
  ASSERT_EQ(s.ops.size(), 1u);
  EXPECT_EQ(s.ops[0].calls, 20u);
  EXPECT_EQ(s.ops[0].batches, 2u);
  EXPECT_EQ(s.ops[0].timeouts, 2u);
  EXPECT_EQ(s.ops[0].retries, 0u);
  // The direct call: the same error, once the function has given up on its stop.
  EXPECT_THROW(slow(3), xcs::timeout_error);
  EXPECT_EQ(held.stopped.load(), 3);
}

TEST(BatchOpTest, ALateCompletionAfterATimeoutIsDiscardedEvenOnceTheOpIsGone) {
  held_batches held;
  {
    auto slow = holding("late async", held, xcs::timeout(30ms), xcs::max_concurrency(1));
    auto f = xcs::jit([&](const auto& v) { return xcs::map(slow, v); });
    EXPECT_THROW(f(iota(5)), xcs::timeout_error);
    ASSERT_EQ(held.count(), 1u);
    EXPECT_EQ(held.stopped.load(), 1);
  }
  // The op and the jitted function are gone: the completion finds its attempt timed out, drops
  // the result, gives back the permit and frees the op (ASan would see a use after free).
  held.complete(0);
}

TEST(BatchOpTest, ATimedOutAsyncBatchIsResentAndTheRetryDelivers) {
  held_batches held;
  auto slow_once = xcs::batch_op(
      "slow once",
      [&held](const std::vector<int>& in, xcs::completion<std::vector<int>> done) {
        if (held.count() == 0) {
          held(in, std::move(done));  // never completed in time
        } else {
          done(doubled(in));
        }
      },
      xcs::timeout(30ms), xcs::retry(2, 1ms));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(slow_once, v); });
  EXPECT_EQ(f(iota(6)), doubled(iota(6)));
  EXPECT_EQ(held.stopped.load(), 1);
  const auto s = f.stats();
  ASSERT_EQ(s.ops.size(), 1u);
  EXPECT_EQ(s.ops[0].batches, 1u);
  EXPECT_EQ(s.ops[0].timeouts, 1u);
  EXPECT_EQ(s.ops[0].retries, 1u);
  held.complete(0);  // late: discarded
}

/// An async batch function whose completions come from threads of its own; attempt `n`
/// (counted from 1) fails with `failures[n - 1]` while there is one, then succeeds.
struct flaky_async {
  std::mutex m;
  std::vector<std::vector<int>> sent;
  std::vector<std::exception_ptr> failures;
  std::vector<std::thread> threads;
  ~flaky_async() {
    for (auto& t : threads) t.join();
  }
  void operator()(const std::vector<int>& in, xcs::completion<std::vector<int>> done) {
    std::lock_guard lock(m);
    sent.push_back(in);
    std::exception_ptr e = sent.size() <= failures.size() ? failures[sent.size() - 1] : nullptr;
    threads.emplace_back([d = std::move(done), in, e]() mutable {
      std::this_thread::sleep_for(1ms);
      if (e) {
        d.fail(e);
      } else {
        d(doubled(in));
      }
    });
  }
};

TEST(BatchOpTest, AnAsyncBatchIsResentAfterItsBackoffWithTheSameDeduplicatedInputs) {
  flaky_async fn;
  fn.failures = {std::make_exception_ptr(boom("first")), std::make_exception_ptr(boom("second"))};
  auto flaky = xcs::batch_op(
      "flaky async",
      [&fn](const std::vector<int>& in, xcs::completion<std::vector<int>> done) {
        fn(in, std::move(done));
      },
      xcs::retry(3, 5ms));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(flaky, v); });
  EXPECT_EQ(f(std::vector<int>{1, 1, 2, 2, 3}), (std::vector<int>{2, 2, 4, 4, 6}));
  {
    std::lock_guard lock(fn.m);
    EXPECT_EQ(fn.sent, (std::vector<std::vector<int>>{{1, 2, 3}, {1, 2, 3}, {1, 2, 3}}));
  }
  const auto s = f.stats();
  ASSERT_EQ(s.ops.size(), 1u);
  EXPECT_EQ(s.ops[0].calls, 5u);
  EXPECT_EQ(s.ops[0].batches, 1u);
  EXPECT_EQ(s.ops[0].retries, 2u);  // the batch's re-sends
  EXPECT_EQ(s.ops[0].deduplicated, 2u);
  EXPECT_EQ(s.ops[0].errors, 0u);
  // A direct call retries too.
  fn.failures.push_back(std::make_exception_ptr(boom("direct")));
  EXPECT_EQ(flaky(4), 8);
}

TEST(BatchOpTest, RetryIfDecidesAndTheLastExceptionReachesEveryCall) {
  flaky_async fn;
  const auto last = std::make_exception_ptr(boom("not worth a retry"));
  fn.failures = {std::make_exception_ptr(boom("worth a retry")), last, last};
  auto flaky = xcs::batch_op(
      "picky async",
      [&fn](const std::vector<int>& in, xcs::completion<std::vector<int>> done) {
        fn(in, std::move(done));
      },
      xcs::retry(5, 1ms), xcs::retry_if([](const std::exception_ptr& e) {
        try {
          std::rethrow_exception(e);
        } catch (const boom& b) {
          return std::string(b.what()) == "worth a retry";
        } catch (...) {
          return false;
        }
      }));
  auto both = xcs::op("both", [](const int& a, const int& b) { return a + b; });
  auto f = xcs::jit([&](const auto& v) {
    auto d = xcs::map(flaky, v);
    return both(d[0], d[3]);  // two calls of the batch: each sees the one exception
  });
  try {
    f(iota(4));
    FAIL() << "no exception";
  } catch (const boom&) {
    EXPECT_EQ(std::current_exception(), last);
  }
  std::lock_guard lock(fn.m);
  EXPECT_EQ(fn.sent.size(), 2u);
}

TEST(BatchOpTest, NoAttemptOfABatchAfterTheDeadline) {
  std::atomic<int> attempts{0};
  std::atomic<std::int64_t> last_attempt_ns{0};
  const auto t0 = std::chrono::steady_clock::now();
  auto failing = xcs::batch_op(
      "failing async",
      [&](const std::vector<int>&, xcs::completion<std::vector<int>> done) {
        ++attempts;
        last_attempt_ns = (std::chrono::steady_clock::now() - t0).count();
        done.fail(std::make_exception_ptr(boom("down")));
      },
      xcs::retry(100, 50ms));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(failing, v); });
  EXPECT_ANY_THROW(f.with_deadline(300ms)(iota(3)));
  const auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_LT(took, 3s);  // the backoffs stop at the deadline, not after 100 attempts
  EXPECT_GE(attempts.load(), 1);
  EXPECT_LT(attempts.load(), 100);
  // Checked before each attempt (a loaded machine may start one a little late).
  EXPECT_LE(std::chrono::nanoseconds(last_attempt_ns.load()), 400ms);
}

TEST(BatchOpTest, BatchesWaitingForTokensAreQueuedAndHoldNoThread) {
  const unsigned saved = xcs::thread_count();
  xcs::set_thread_count(2);
  // 10 tokens a second, one at a time: 8 batches of one call take about 0.7 s. A batch that
  // waited on its thread could not have more than 3 waiting at once (the caller and 2 workers).
  xcs::rate_limiter limiter(10, 1);
  std::atomic<int> sent{0};
  auto limited = xcs::batch_op(
      "limited",
      [&](const std::vector<int>& in) {
        ++sent;
        return doubled(in);
      },
      xcs::max_batch(1), xcs::rate_limit(limiter));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(limited, v); });
  std::size_t most = 0;
  std::atomic<bool> done{false};
  std::thread sampler([&] {
    while (!done.load()) {
      most = std::max(most, limiter.bucket().waiting());
      std::this_thread::sleep_for(200us);
    }
  });
  EXPECT_EQ(f(iota(8)), doubled(iota(8)));
  done = true;
  sampler.join();
  EXPECT_EQ(sent.load(), 8);
  EXPECT_GE(most, 6u);
  EXPECT_EQ(limiter.bucket().waiting(), 0u);
  xcs::set_thread_count(saved);
}

TEST(BatchOpTest, AStopEndsTheBatchesQueuedForTokensAtOnce) {
  xcs::rate_limiter limiter(0.5, 1);  // one token, then one every 2 s
  std::atomic<int> sent{0};
  auto limited = xcs::batch_op(
      "limited slow",
      [&](const std::vector<int>& in, xcs::completion<std::vector<int>> done) {
        ++sent;
        done(doubled(in));
      },
      xcs::max_batch(1), xcs::rate_limit(limiter));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(limited, v); });
  std::stop_source stop;
  std::thread canceller([&] {
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (limiter.bucket().waiting() < 5 && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(1ms);
    }
    stop.request_stop();
  });
  const auto t0 = std::chrono::steady_clock::now();
  EXPECT_THROW(f.with_stop_token(stop.get_token())(iota(6)), xcs::cancelled);
  canceller.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 4s);  // not the 10 s the tokens take
  // The call may return before the last queued batch has seen the stop (the run's own stop
  // comes first), but well before the next token, 2 s on.
  auto queue_drains = [&] {
    const auto end = std::chrono::steady_clock::now() + 1s;
    while (limiter.bucket().waiting() > 0 && std::chrono::steady_clock::now() < end) {
      std::this_thread::sleep_for(1ms);
    }
    return limiter.bucket().waiting() == 0;
  };
  EXPECT_TRUE(queue_drains());
  EXPECT_EQ(sent.load(), 1);
  // And a deadline does the same.
  EXPECT_THROW(f.with_deadline(200ms)(iota(6)), xcs::deadline_exceeded);
  EXPECT_TRUE(queue_drains());
  EXPECT_EQ(sent.load(), 1);
}

TEST(BatchOpTest, BatchesWaitingForAPermitGoOneAtATimeAndAllDeliver) {
  held_batches held;
  auto one_at_a_time = holding("one at a time", held, xcs::max_batch(2), xcs::max_concurrency(1));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(one_at_a_time, v); });
  std::thread completer([&] {
    // Each batch starts only once the one before has completed: at most one is held.
    for (std::size_t i = 0; i < 5; ++i) {
      const auto end = std::chrono::steady_clock::now() + 10s;
      while (held.count() <= i && std::chrono::steady_clock::now() < end) {
        std::this_thread::sleep_for(1ms);
      }
      std::this_thread::sleep_for(2ms);
      EXPECT_EQ(held.count(), i + 1);
      if (held.count() > i) held.complete(i);
    }
  });
  EXPECT_EQ(f(iota(10)), doubled(iota(10)));
  completer.join();
  EXPECT_EQ(held.count(), 5u);
}

}  // namespace

namespace {

TEST(BatchOpTest, ASyncBatchFunctionThatWaitsIsSeenToBlockWithoutAHint) {
  // 8 batches of one on 2 workers and the caller: they overlap 6 deep only if the monitor sees
  // the function wait and stand-in workers (or, once the op is known to block, the lane) take
  // the rest, as for a plain op.
  const unsigned saved = xcs::thread_count();
  xcs::set_thread_count(2);
  xcs_test::concurrency_meter meter;
  auto waits = xcs::batch_op(
      "waits",
      [&](const std::vector<int>& in) {
        xcs_test::concurrency_meter::guard g(meter);
        meter.await_peak(6, xcs_test::give_up());
        return doubled(in);
      },
      xcs::max_batch(1));
  auto f = xcs::jit([&](const auto& v) { return xcs::map(waits, v); });
  for (int call = 0; call < 2; ++call) {
    meter.reset();
    EXPECT_EQ(f(iota(8)), doubled(iota(8)));
    EXPECT_GE(meter.max(), 6) << "call " << call;
  }
  const auto s = f.stats();
  ASSERT_EQ(s.ops.size(), 1u);
  EXPECT_TRUE(s.ops[0].blocking) << "the batch function was not found to block";
  xcs::set_thread_count(saved);
}

}  // namespace
