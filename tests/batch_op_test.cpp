// SPDX-License-Identifier: MIT
// Batch ops: calls that can go together reach the batch function as one batch (by dependency
// level in a plan, by what was recorded since the last wait in a staged call), equal inputs
// are sent once, and every call gets its own result or the batch's exception.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <memory>
#include <mutex>
#include <numeric>
#include <stdexcept>
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
