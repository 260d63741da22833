// SPDX-License-Identifier: MIT
// Soak: a million mixed calls from four threads (cached plans, fallbacks, retraces at the
// cache bound, nested calls, op exceptions, staged calls, blocking-lane ops). Resident memory
// and the thread count must stay flat after warm-up. Each figure is reported beside the same
// mix called directly (BM_Direct_Soak).
//
//   build-bench/bench/soak_bench                     # 1,000,000 calls
//   XCS_SOAK_CALLS=100000 build-bench/bench/soak_bench  # a quick run
//
// Counters: rss_warm_MiB / threads_warm after the first 10% of the calls, rss_end_MiB /
// threads_end after the last, threads_settled one second later (idle lane threads retire),
// rss_growth_KiB = end - warm, wrong = calls whose result differed from the expected one;
// for the jitted mix also what it made xcs do (evictions at the cache bound, fallbacks,
// staged calls, the blocking lane's peak threads, fiber suspensions).
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <stdexcept>

#include "bench_support.hpp"

namespace {

using xcs_bench::process_threads;
using xcs_bench::rss_mib;

constexpr int kThreads = 4;

long soak_calls() {
  if (const char* env = std::getenv("XCS_SOAK_CALLS")) {
    long n = std::atol(env);
    if (n > 0) return n;
  }
  return 1'000'000;
}

struct op_failure : std::runtime_error {
  using std::runtime_error::runtime_error;
};

auto twice = xcs::op("twice", [](int x) { return 2 * x; });
auto add = xcs::op("add", [](int a, int b) { return a + b; });
auto checked = xcs::op("checked", [](int x) {
  if (x % 7 == 0) throw op_failure("multiple of 7");
  return x;
});
auto hinted = xcs::op(
    "hinted", [](int x) { return x + 1; }, xcs::blocking);

auto plan_body = [](const auto& a, const auto& b) { return add(twice(a), twice(b)); };
auto fallback_body = [](const auto& a) { return twice(twice(a)); };  // no parallelism
auto retrace_body = [](const auto& v) {
  std::vector<std::decay_t<decltype(twice(v[0]))>> out;
  for (const auto& e : v) out.push_back(twice(e));
  return out;
};
auto throwing_body = [](const auto& a, const auto& b) { return add(checked(a), checked(b)); };
auto staged_body = [](const auto& a) {
  auto x = twice(a);
  if (x > 100) return add(x, twice(a));  // a read: the call runs staged
  return x;
};
auto lane_body = [](const auto& a, const auto& b) { return add(hinted(a), hinted(b)); };
auto inner = xcs::jit(plan_body);
auto call_inner = xcs::op("call_inner", [](int x) { return inner(x, x + 1); });
auto nested_body = [](const auto& a) { return add(call_inner(a), call_inner(a + 1)); };

/// The mix, called through `call` (the jitted functions or the bodies themselves). Returns
/// how many results differed from the expected ones.
template <class Calls>
long run_mix(Calls& c, long from, long to) {
  long wrong = 0;
  for (long i = from; i < to; ++i) {
    int a = static_cast<int>(i % 1000), kind = static_cast<int>(i % 100);
    if (kind < 50) {
      wrong += c.plan(a, 3) != 2 * a + 6;
    } else if (kind < 60) {
      wrong += c.fallback(a) != 4 * a;
    } else if (kind < 62) {
      // Eight sizes through a cache of four signatures: each call retraces and evicts.
      std::vector<int> v(static_cast<std::size_t>(1 + (i / 100) % 8), a);
      wrong += c.retrace(v) != std::vector<int>(v.size(), 2 * a);
    } else if (kind < 72) {
      wrong += c.nested(a) != (2 * a + 2 * (a + 1)) + (2 * (a + 1) + 2 * (a + 2));
    } else if (kind < 80) {
      try {
        wrong += c.throwing(a, a + 1) != 2 * a + 1;
        wrong += a % 7 == 0 || (a + 1) % 7 == 0;
      } catch (const op_failure&) {
        wrong += !(a % 7 == 0 || (a + 1) % 7 == 0);
      }
    } else if (kind < 95) {
      wrong += c.staged(a) != (2 * a > 100 ? 4 * a : 2 * a);
    } else {
      wrong += c.lane(a, a) != 2 * a + 2;
    }
  }
  return wrong;
}

struct jitted_calls {
  decltype(xcs::jit(plan_body)) plan = xcs::jit(plan_body);
  decltype(xcs::jit(fallback_body)) fallback = xcs::jit(fallback_body);
  decltype(xcs::jit(retrace_body)) retrace = xcs::jit(retrace_body);
  decltype(xcs::jit(nested_body)) nested = xcs::jit(nested_body);
  decltype(xcs::jit(throwing_body)) throwing = xcs::jit(throwing_body);
  decltype(xcs::jit(staged_body)) staged = xcs::jit(staged_body);
  decltype(xcs::jit(lane_body)) lane = xcs::jit(lane_body);
  jitted_calls() { retrace.set_cache_capacity(4); }
  /// What the mix made xcs do, so the figures can be read against it.
  void report(benchmark::State& state) const {
    state.counters["retrace_evictions"] = static_cast<double>(retrace.stats().evictions);
    state.counters["fallback_calls"] = static_cast<double>(fallback.stats().fallback_calls);
    state.counters["staged_calls"] = static_cast<double>(staged.stats().staged_calls);
    xcs::stats runtime = lane.stats();
    state.counters["lane_peak"] = runtime.blocking_threads_peak;
    state.counters["fiber_suspensions"] = static_cast<double>(runtime.fiber_suspensions);
  }
};

/// The nested calls made directly all the way down (calling nested_body plainly would still
/// call the jitted `inner`).
auto direct_nested = [](int a) { return plan_body(a, a + 1) + plan_body(a + 1, a + 2); };

struct direct_calls {
  decltype(plan_body) plan = plan_body;
  decltype(fallback_body) fallback = fallback_body;
  decltype(retrace_body) retrace = retrace_body;
  decltype(direct_nested) nested = direct_nested;
  decltype(throwing_body) throwing = throwing_body;
  decltype(staged_body) staged = staged_body;
  decltype(lane_body) lane = lane_body;
  void report(benchmark::State&) const {}
};

/// Runs `calls` calls of the mix on kThreads threads, in two phases: warm-up (10%), then the
/// rest; reports memory and threads after each.
template <class Calls>
void soak(benchmark::State& state) {
  const long calls = soak_calls();
  const long warm = calls / 10;
  for (auto _ : state) {
    Calls c;
    std::atomic<long> wrong{0};
    auto phase = [&](long from, long to) {
      std::vector<std::thread> threads;
      for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
          long span = (to - from) / kThreads;
          long begin = from + t * span, end = t + 1 == kThreads ? to : begin + span;
          wrong += run_mix(c, begin, end);
        });
      }
      for (auto& th : threads) th.join();
    };
    phase(0, warm);
    double rss_warm = rss_mib();
    int threads_warm = process_threads();
    phase(warm, calls);
    double rss_end = rss_mib();
    int threads_end = process_threads();
    state.PauseTiming();
    std::this_thread::sleep_for(std::chrono::seconds(1));
    int threads_settled = process_threads();
    state.ResumeTiming();
    state.counters["calls"] = static_cast<double>(calls);
    state.counters["rss_warm_MiB"] = rss_warm;
    state.counters["rss_end_MiB"] = rss_end;
    state.counters["rss_growth_KiB"] = (rss_end - rss_warm) * 1024;
    state.counters["threads_warm"] = threads_warm;
    state.counters["threads_end"] = threads_end;
    state.counters["threads_settled"] = threads_settled;
    state.counters["wrong"] = static_cast<double>(wrong.load());
    c.report(state);
    state.counters["s_per_call"] = benchmark::Counter(
        static_cast<double>(calls), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
    if (wrong.load() != 0) state.SkipWithError("some results differed from the direct call");
  }
}

void BM_Jit_Soak(benchmark::State& state) { soak<jitted_calls>(state); }
void BM_Direct_Soak(benchmark::State& state) { soak<direct_calls>(state); }

BENCHMARK(BM_Direct_Soak)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_Jit_Soak)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
