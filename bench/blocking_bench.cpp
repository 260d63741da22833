// SPDX-License-Identifier: MIT
// Blocking ops (64 x 20 ms sleeps) and CPU-bound ops (8 x 25 ms) against their baselines.
#include <future>

#include "bench_support.hpp"

namespace {

using namespace xcs_bench;

constexpr int kSleeps = 64;
constexpr auto kSleep = std::chrono::milliseconds(20);
constexpr int kBusy = 8;
constexpr std::int64_t kBusyNs = 25'000'000;

int sleep_then(int v) {
  std::this_thread::sleep_for(kSleep);
  return v + 1;
}
int busy_then(int v) {
  spin_cpu_ns(kBusyNs);
  return v + 1;
}

/// A body of `n` independent calls of `op`, returning all their results.
template <class Op>
auto independent(Op op, int n) {
  return [op, n](auto x) {
    std::vector<decltype(op(x))> out;
    for (int i = 0; i < n; ++i) out.push_back(op(x));
    return out;
  };
}

void set_ms(benchmark::State& state, double ns, double target_ms) {
  state.counters["ms"] = ns / 1e6;
  if (target_ms > 0) state.counters["target_ms"] = target_ms;
}

// ---- 64 sleeps ------------------------------------------------------------------------

void BM_Serial_Sleep64(benchmark::State& state) {
  auto body = independent(xcs::op("sleep", sleep_then), kSleeps);
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(body(1)); });
  report(state, "sleep", ns, kSleeps, true);
  set_ms(state, ns, 0);
}

void BM_Async_Sleep64(benchmark::State& state) {
  double ns = run_loop(state, [] {
    std::vector<std::future<int>> fs;
    for (int i = 0; i < kSleeps; ++i) fs.push_back(std::async(std::launch::async, sleep_then, 1));
    for (auto& f : fs) benchmark::DoNotOptimize(f.get());
  });
  report(state, "sleep", ns, kSleeps);
  set_ms(state, ns, 30);
}

#if XCS_HAVE_TBB
void BM_TbbFlowGraph_Sleep64(benchmark::State& state) {
  dag d = fan_out(kSleeps);
  auto call = [](int, const auto&... in) { return sleep_then((1 + ... + in)); };
  tbb_dag g(d, call);
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(g.run(1)); });
  report(state, "sleep", ns, kSleeps);
  set_ms(state, ns, 30);
}
#endif

// A fresh op and a fresh jitted object each iteration: the call traces, and the scheduler
// must find out that the op blocks.
void BM_Jit_Sleep64FirstCall(benchmark::State& state) {
  double ns = run_loop(state, [] {
    auto f = xcs::jit(independent(xcs::op("sleep", sleep_then), kSleeps));
    benchmark::DoNotOptimize(f(1));
  });
  report(state, "sleep", ns, kSleeps);
  set_ms(state, ns, 30);
}

void BM_Jit_Sleep64Cached(benchmark::State& state) {
  auto f = xcs::jit(independent(xcs::op("sleep", sleep_then), kSleeps));
  f(1);
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  report(state, "sleep", ns, kSleeps);
  set_ms(state, ns, 30);
}

void BM_Jit_Sleep64Hint(benchmark::State& state) {
  auto f = xcs::jit(independent(xcs::op("sleep", sleep_then, xcs::blocking), kSleeps));
  f(1);
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  report(state, "sleep", ns, kSleeps);
  set_ms(state, ns, 30);
}

// ---- 8 CPU-bound ops ------------------------------------------------------------------

void BM_Serial_Busy8(benchmark::State& state) {
  auto body = independent(xcs::op("busy", busy_then), kBusy);
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(body(1)); });
  report(state, "busy", ns, kBusy, true);
  set_ms(state, ns, 0);
}

void BM_Async_Busy8(benchmark::State& state) {
  double ns = run_loop(state, [] {
    std::vector<std::future<int>> fs;
    for (int i = 0; i < kBusy; ++i) fs.push_back(std::async(std::launch::async, busy_then, 1));
    for (auto& f : fs) benchmark::DoNotOptimize(f.get());
  });
  report(state, "busy", ns, kBusy);
  set_ms(state, ns, 0);
}

#if XCS_HAVE_TBB
void BM_TbbParallelFor_Busy8(benchmark::State& state) {
  std::vector<int> out(kBusy);
  double ns = run_loop(state, [&] {
    tbb::parallel_for(0, kBusy, [&](int i) { out[i] = busy_then(1); });
    benchmark::DoNotOptimize(out.data());
  });
  report(state, "busy", ns, kBusy);
  set_ms(state, ns, 0);
  serial_times()["busy/tbb"] = ns;
}
#endif

void BM_Jit_Busy8(benchmark::State& state) {
  auto body = independent(xcs::op("busy", busy_then), kBusy);
  auto f = xcs::jit(body);
  f(1);
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  report(state, "busy", ns, kBusy);
  set_ms(state, ns, 0);
  auto it = serial_times().find("busy/tbb");
  if (it != serial_times().end()) {
    // (serial / jit) / (serial / tbb) = tbb / jit; target >= 0.95.
    state.counters["speedup_vs_tbb_speedup"] = it->second / ns;
  }
  state.counters["flagged_blocking"] = ops_flagged_blocking(body);
}

BENCHMARK(BM_Serial_Sleep64)->UseRealTime()->Iterations(2);
BENCHMARK(BM_Async_Sleep64)->UseRealTime()->Iterations(10);
#if XCS_HAVE_TBB
BENCHMARK(BM_TbbFlowGraph_Sleep64)->UseRealTime()->Iterations(3);
#endif
BENCHMARK(BM_Jit_Sleep64FirstCall)->UseRealTime()->Iterations(10);
BENCHMARK(BM_Jit_Sleep64Cached)->UseRealTime()->Iterations(10);
BENCHMARK(BM_Jit_Sleep64Hint)->UseRealTime()->Iterations(10);
BENCHMARK(BM_Serial_Busy8)->UseRealTime()->Iterations(5);
BENCHMARK(BM_Async_Busy8)->UseRealTime()->Iterations(10);
#if XCS_HAVE_TBB
BENCHMARK(BM_TbbParallelFor_Busy8)->UseRealTime()->Iterations(10);
#endif
BENCHMARK(BM_Jit_Busy8)->UseRealTime()->Iterations(10);

}  // namespace

BENCHMARK_MAIN();
