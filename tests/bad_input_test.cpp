// SPDX-License-Identifier: MIT
// Bad input: million-node graphs (run as plans, not fallbacks), empty containers, move-only
// types, reference arguments the body assigns, and user code that throws while tracing.
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <array>
#include <atomic>
#include <memory>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

namespace {

#if defined(XCS_SANITIZE_THREAD) || defined(XCS_SANITIZE_ADDRESS)
constexpr std::size_t kHuge = 200'000;  // sanitizers: 3-10x the memory and time per node
#else
constexpr std::size_t kHuge = 1'000'000;
#endif

std::atomic<long> g_inc_calls{0};
auto inc = xcs::op("inc", [](int x) {
  g_inc_calls.fetch_add(1, std::memory_order_relaxed);
  return x + 1;
});

/// One op per element of a vector argument: a batch of n independent nodes.
auto batch = [](const auto& v) {
  std::vector<std::decay_t<decltype(inc(v[0]))>> out;
  out.reserve(v.size());
  for (const auto& e : v) out.push_back(inc(e));
  return out;
};

TEST(BadInputTest, MillionNodeBatchRunsAPlan) {
  // How its time grows with the size is timing_test.cpp's BatchTimeGrowsLinearly.
  std::vector<int> v(kHuge);
  std::iota(v.begin(), v.end(), 0);
  auto f = xcs::jit(batch);
  g_inc_calls = 0;
  std::vector<int> r = f(v);
  ASSERT_EQ(r.size(), kHuge);
  for (std::size_t i = 0; i < kHuge; i += 9973) EXPECT_EQ(r[i], static_cast<int>(i) + 1);
  EXPECT_EQ(r.back(), static_cast<int>(kHuge));
  EXPECT_EQ(g_inc_calls.load(), static_cast<long>(kHuge));
  EXPECT_EQ(f(v), r);  // the cached plan
  xcs::stats s = f.stats();
  EXPECT_EQ(s.fallback_calls, 0u) << s.fallback_reason;
  EXPECT_EQ(s.plan_runs, 2u);
  EXPECT_EQ(s.nodes, kHuge);
  EXPECT_EQ(s.max_parallelism, kHuge);
}

TEST(BadInputTest, MillionNodeFanOutFromOneNode) {
  auto f = xcs::jit([](const auto& x) {
    auto base = inc(x);
    std::vector<decltype(base)> out;
    out.reserve(kHuge);
    for (std::size_t i = 0; i < kHuge; ++i) out.push_back(inc(base));
    return out;
  });
  std::vector<int> r = f(1);
  ASSERT_EQ(r.size(), kHuge);
  EXPECT_EQ(r.front(), 3);
  EXPECT_EQ(r.back(), 3);
  xcs::stats s = f.stats();
  EXPECT_EQ(s.fallback_calls, 0u) << s.fallback_reason;
  EXPECT_EQ(s.plan_runs, 1u);
  EXPECT_EQ(s.nodes, kHuge + 1);
  EXPECT_EQ(s.max_parallelism, kHuge);
  EXPECT_EQ(s.critical_path, 2u);
}

TEST(BadInputTest, MillionNodeChainDoesNotRecurseTooDeep) {
  // A chain of a million ops beside one independent op: a plan whose critical path is a
  // million nodes long (analysis, compilation and result building must not recurse on it).
  auto chain = [](const auto& x) {
    auto y = inc(x);
    for (std::size_t i = 1; i < kHuge; ++i) y = inc(y);
    return std::make_pair(y, inc(x));
  };
  auto f = xcs::jit(chain);
  EXPECT_EQ(f(0), std::make_pair(static_cast<int>(kHuge), 1));
  xcs::stats s = f.stats();
  EXPECT_EQ(s.fallback_calls, 0u) << s.fallback_reason;
  EXPECT_EQ(s.plan_runs, 1u);
  EXPECT_EQ(s.critical_path, kHuge);
  // Only the chain: nothing can run at the same time, so it falls back, with a reason.
  auto g = xcs::jit([](const auto& x) {
    auto y = inc(x);
    for (std::size_t i = 1; i < kHuge; ++i) y = inc(y);
    return y;
  });
  EXPECT_EQ(g(0), static_cast<int>(kHuge));
  EXPECT_NE(g.stats().fallback_reason.find("no independent ops"), std::string::npos)
      << g.stats().fallback_reason;
}

// ---- empty containers -----------------------------------------------------------------------

auto total = xcs::op(
    "total", [](const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); });
auto joined = xcs::op("joined", [](const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += x;
  return s;
});
auto empty_of = xcs::op("empty_of", [](int) { return std::vector<int>{}; });

TEST(BadInputTest, EmptyContainersWork) {
  auto body = [](const auto& v, const auto& w, const auto& a, const auto& x) {
    std::vector<std::decay_t<decltype(inc(x))>> ints(v.begin(), v.end());
    for (const auto& e : a) ints.push_back(e);
    std::vector<std::decay_t<decltype(joined(w))>> strs(w.begin(), w.end());
    std::vector<std::decay_t<decltype(inc(x))>> none;  // an empty pack
    return std::make_tuple(total(ints), joined(strs), total(none), empty_of(x), ints, strs);
  };
  auto f = xcs::jit(body);
  const std::vector<int> v;
  const std::vector<std::string> w;
  const std::array<int, 0> a{};
  EXPECT_EQ(f(v, w, a, 1), body(v, w, a, 1));
  EXPECT_EQ(f(v, w, a, 2), body(v, w, a, 2));
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;
  const std::vector<int> v2{1, 2};
  const std::vector<std::string> w2{"x"};
  EXPECT_EQ(f(v2, w2, a, 3), body(v2, w2, a, 3));
  EXPECT_EQ(f(v, w, a, 4), body(v, w, a, 4));  // back to empty: the cached plan
}

// ---- move-only types ------------------------------------------------------------------------

auto deref = xcs::op("deref", [](const std::unique_ptr<int>& p) { return *p; });
auto make_box = xcs::op("make_box", [](int x) { return std::make_unique<int>(x); });

TEST(BadInputTest, MoveOnlyArgumentsAndResultsWork) {
  // An argument: ops receive it as const std::unique_ptr<int>&.
  auto f = xcs::jit([](const auto& p) { return deref(p) + inc(deref(p)); });
  auto u = std::make_unique<int>(3);
  EXPECT_EQ(f(u), 7);
  EXPECT_EQ(f(std::make_unique<int>(4)), 9);
  EXPECT_NE(u, nullptr);  // not moved from
  EXPECT_EQ(f.stats().fallback_calls, 0u) << f.stats().fallback_reason;

  // A result: the op's unique_ptr is moved into the return value.
  auto g = xcs::jit([](const auto& x) { return std::make_pair(make_box(x), inc(x)); });
  auto r = g(5);
  ASSERT_NE(r.first, nullptr);
  EXPECT_EQ(*r.first, 5);
  EXPECT_EQ(r.second, 6);
  EXPECT_EQ(g.stats().fallback_calls, 0u) << g.stats().fallback_reason;

  // Between ops, and a move-only result no one reads (destroyed with the run).
  auto h = xcs::jit([](const auto& x) {
    auto p = make_box(x);
    auto unused = make_box(x);
    (void)unused;
    return std::make_pair(deref(p), inc(x));
  });
  for (int i = 0; i < 3; ++i) EXPECT_EQ(h(i), std::make_pair(i, i + 1));
  EXPECT_EQ(h.stats().fallback_calls, 0u) << h.stats().fallback_reason;
}

// ---- reference arguments the body assigns ---------------------------------------------------

TEST(BadInputTest, BodyAssigningReferenceArgumentFallsBackAndModifiesCaller) {
  auto body = [](auto& x) {
    x = inc(x);
    return inc(x);
  };
  auto f = xcs::jit(body);
  int direct = 1, jitted = 1;
  int want = body(direct);
  g_inc_calls = 0;
  EXPECT_EQ(f(jitted), want);
  EXPECT_EQ(jitted, direct);  // the caller's variable changed, as in the direct call
  EXPECT_EQ(jitted, 2);
  EXPECT_EQ(g_inc_calls.load(), 2);  // each op once: not at trace time, then directly
  EXPECT_EQ(f(jitted), 4);
  EXPECT_EQ(jitted, 3);
  xcs::stats s = f.stats();
  EXPECT_EQ(s.fallback_calls, 2u);
  EXPECT_NE(s.fallback_reason.find("assigns to argument 0"), std::string::npos)
      << s.fallback_reason;

  // The second argument, through a body that also reads the first.
  auto g = xcs::jit([](const auto& a, auto& b) {
    b = inc(a);
    return inc(a) + b;
  });
  int b = 0;
  EXPECT_EQ(g(10, b), 22);
  EXPECT_EQ(b, 11);
  EXPECT_NE(g.stats().fallback_reason.find("assigns to argument 1"), std::string::npos)
      << g.stats().fallback_reason;

  // Taking a reference without assigning is fine: a plan, and the caller's value unchanged.
  auto k = xcs::jit([](auto& x) { return std::make_pair(inc(x), inc(x)); });
  int y = 5;
  EXPECT_EQ(k(y), std::make_pair(6, 6));
  EXPECT_EQ(y, 5);
  EXPECT_EQ(k.stats().fallback_calls, 0u) << k.stats().fallback_reason;
}

// ---- user code (not an op) throwing while tracing -------------------------------------------

void check_size(std::size_t n) {
  if (n > 3) throw std::length_error("at most 3 elements, got " + std::to_string(n));
}

TEST(BadInputTest, UserCodeThrowingAtTraceTimeBehavesAsDirectCall) {
  auto body = [](const auto& v) {
    check_size(v.size());  // plain user code: runs at trace time too
    return batch(v);
  };
  auto f = xcs::jit(body);
  EXPECT_EQ(f(std::vector<int>{1, 2}), (std::vector<int>{2, 3}));
  g_inc_calls = 0;
  try {
    f(std::vector<int>{1, 2, 3, 4, 5});
    FAIL() << "no exception";
  } catch (const std::length_error& e) {
    EXPECT_STREQ(e.what(), "at most 3 elements, got 5");
  }
  EXPECT_EQ(g_inc_calls.load(), 0);
  EXPECT_NE(f.stats().fallback_reason.find("length_error"), std::string::npos)
      << f.stats().fallback_reason;
  EXPECT_EQ(f(std::vector<int>{7, 8}), (std::vector<int>{8, 9}));  // still the plan

  // Something not derived from std::exception.
  auto g = xcs::jit([](const auto& x) -> decltype(inc(x)) {
    if (sizeof(x) > 0) throw 7;
    return inc(x);
  });
  EXPECT_THROW(
      {
        try {
          g(1);
        } catch (int i) {
          EXPECT_EQ(i, 7);
          throw;
        }
      },
      int);

  // A read inside a catch (...) runs staged: the read returns the value, nothing for the
  // catch to swallow, and the result is the direct call's.
  auto h = xcs::jit([](const auto& x) {
    auto y = inc(x);
    int seen = 0;
    try {
      if (y > 2) seen = 1;
    } catch (...) {
      seen = -1;
    }
    return std::make_pair(inc(y) + seen, inc(x));
  });
  EXPECT_EQ(h(5), std::make_pair(8, 6));
  EXPECT_EQ(h(0), std::make_pair(2, 1));
  EXPECT_EQ(h.stats().staged_calls, 2u);
  EXPECT_EQ(h.stats().fallback_calls, 0u);
}

}  // namespace
