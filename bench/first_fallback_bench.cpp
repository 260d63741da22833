// SPDX-License-Identifier: MIT
// What the first call of a signature costs over the direct call when it falls back or goes
// staged, in a fresh process (where finding source lines used to read the debug information
// on the call: 73-130 ms). Target: at most 2 ms more than the direct call. Source lines are
// now looked up only when a reason is read (stats(), explain(), XCS_LOG), timed separately.
#include <chrono>
#include <cstdint>
#include <thread>

#include "bench_support.hpp"

namespace {

using xcs_bench::now_ns;

auto work = xcs::op("work", [](int x) {
  std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return x + 1;
});

// Takes a non-const reference to a concrete type: it cannot run traced, so it falls back.
auto falls_back = [](int& x) { return work(x) + work(x + 1); };
// Takes `int`: converting the traced argument is a read, so it runs staged.
auto goes_staged = [](int x) { return work(x) + work(x + 1); };

/// One first call per process, each beside the direct call, then the first stats() read.
template <class Body>
void first_call(benchmark::State& state, Body body) {
  double direct_ms = 0, first_ms = 0, stats_ms = 0;
  for (auto _ : state) {
    int x = 1;
    std::int64_t t0 = now_ns();
    benchmark::DoNotOptimize(body(x));
    std::int64_t t1 = now_ns();
    auto f = xcs::jit(body);
    benchmark::DoNotOptimize(f(x));
    std::int64_t t2 = now_ns();
    xcs::stats s = f.stats();  // the reason's source line is looked up here
    benchmark::DoNotOptimize(s.fallback_reason.size() + s.staged_reason.size());
    std::int64_t t3 = now_ns();
    direct_ms = static_cast<double>(t1 - t0) / 1e6;
    first_ms = static_cast<double>(t2 - t1) / 1e6;
    stats_ms = static_cast<double>(t3 - t2) / 1e6;
  }
  state.counters["direct_ms"] = direct_ms;
  state.counters["first_call_ms"] = first_ms;
  state.counters["extra_ms"] = first_ms - direct_ms;
  state.counters["target_extra_ms"] = 2;
  state.counters["first_stats_ms"] = stats_ms;
}

void BM_FirstFallbackCall(benchmark::State& state) { first_call(state, falls_back); }
void BM_FirstStagedCall(benchmark::State& state) { first_call(state, goes_staged); }

// One iteration each: only the first call of a fresh process shows the cost of reading the
// debug information. Run them in separate processes for a clean figure each:
//   first_fallback_bench --benchmark_filter=Fallback ; first_fallback_bench
//   --benchmark_filter=Staged
BENCHMARK(BM_FirstFallbackCall)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FirstStagedCall)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
