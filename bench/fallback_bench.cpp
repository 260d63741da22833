// SPDX-License-Identifier: MIT
// Cached calls of a body over concrete types, `[](int a, int b) { return a * 10 + b; }`: it calls
// no op, so nothing can run at the same time. What the jitted call adds to the direct call
// (target: at most 50 ns), both timed in the same run; the label says how the jitted call ran
// (fallback, staged or plan).
#include "bench_support.hpp"

namespace {

using xcs_bench::mean_call_ns;
using xcs_bench::run_loop;

auto plain_typed = [](int a, int b) { return a * 10 + b; };

int g_a = 4, g_b = 2;

/// Calls `f(g_a, g_b)`, hiding the arguments and the result from the optimizer.
template <class F>
void call_plain(const F& f) {
  int a = g_a, b = g_b;
  benchmark::DoNotOptimize(a);
  benchmark::DoNotOptimize(b);
  benchmark::DoNotOptimize(f(a, b));
}

void BM_Direct_PlainTyped(benchmark::State& state) {
  double ns = run_loop(state, [] { call_plain(plain_typed); });
  state.counters["direct_ns"] = ns;
}

void BM_Jit_PlainTyped(benchmark::State& state) {
  auto f = xcs::jit(plain_typed);
  if (f(g_a, g_b) != plain_typed(g_a, g_b)) {
    state.SkipWithError("the jitted call returned something else than the direct call");
    return;
  }
  double ns = run_loop(state, [&] { call_plain(f); });
  double direct = mean_call_ns([] { call_plain(plain_typed); });
  xcs::stats s = f.stats();
  const double calls = static_cast<double>(std::max<std::uint64_t>(1, s.calls));
  state.counters["direct_ns"] = direct;
  state.counters["extra_ns"] = ns - direct;
  state.counters["target_extra_ns"] = 50;
  state.counters["fallback_calls"] = static_cast<double>(s.fallback_calls) / calls;
  state.counters["staged_calls"] = static_cast<double>(s.staged_calls) / calls;
  state.SetLabel(s.fallback_calls > 0 ? "fallback" : s.staged_calls > 0 ? "staged" : "plan");
}

BENCHMARK(BM_Direct_PlainTyped)->UseRealTime();
BENCHMARK(BM_Jit_PlainTyped)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
