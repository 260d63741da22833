// SPDX-License-Identifier: MIT
// Batched ops: what batching costs per call on a cached plan of 1,000 calls, beside the batch
// function's own cost, a plain op over the same items and the direct call; and how many
// batches 8 threads' concurrent one-item calls make with and without xcs::batch_window.
#include <atomic>
#include <barrier>
#include <thread>
#include <vector>

#include "bench_support.hpp"

namespace {

using xcs_bench::now_ns;
using xcs_bench::report;
using xcs_bench::run_loop;

constexpr int kItems = 1000;

std::atomic<int> g_batches{0};

/// The trivial batch function: each input doubled.
std::vector<int> double_all(const std::vector<int>& in) {
  g_batches.fetch_add(1, std::memory_order_relaxed);
  std::vector<int> out;
  out.reserve(in.size());
  for (int x : in) out.push_back(2 * x);
  return out;
}

auto batched = xcs::batch_op("double", double_all);
auto plain = xcs::op("double", [](const int& x) { return 2 * x; });

std::vector<int> items() {
  std::vector<int> v(kItems);
  for (int i = 0; i < kItems; ++i) v[static_cast<std::size_t>(i)] = i;
  return v;
}

// The batch function alone on 1,000 inputs: the cost a batched call adds to.
void BM_Fn_Batch1000(benchmark::State& state) {
  const auto v = items();
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(double_all(v)); });
  report(state, "batch1000", ns, kItems, true);
}

// A cached plan of 1,000 calls of the batch op (one batch): overhead_ns_per_node is what
// batching adds per call over the function's own cost (issue 19: at most 150 ns).
void BM_Plan_Batch1000(benchmark::State& state) {
  auto f = xcs::jit([](const auto& v) { return xcs::map(batched, v); });
  const auto v = items();
  f(v);
  g_batches = 0;
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(v)); });
  report(state, "batch1000", ns, kItems);
  state.counters["batches_per_call"] =
      static_cast<double>(g_batches.load()) / static_cast<double>(state.iterations());
  state.counters["target_overhead_ns"] = 150;
}

// The same 1,000 calls of a plain op: a node per call, each run on its own.
void BM_Plan_PlainOp1000(benchmark::State& state) {
  auto f = xcs::jit([](const auto& v) { return xcs::map(plain, v); });
  const auto v = items();
  f(v);
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(v)); });
  report(state, "batch1000", ns, kItems);
}

// The direct call: a batch of one per call.
void BM_Direct_Batch1(benchmark::State& state) {
  int x = 7;
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(batched(x)); });
  report(state, "direct1", ns, 1);
}

/// 8 threads each make one direct call of one item at the same moment; returns the batches
/// the function was called with and sets the mean latency of a call.
template <class Op>
int eight_at_once(const Op& op, double& mean_latency_ns) {
  constexpr int kThreads = 8;
  g_batches = 0;
  std::barrier start(kThreads);
  std::atomic<std::int64_t> latency{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      start.arrive_and_wait();
      const std::int64_t t0 = now_ns();
      benchmark::DoNotOptimize(op(t));
      latency += now_ns() - t0;
    });
  }
  for (auto& th : threads) th.join();
  mean_latency_ns = static_cast<double>(latency.load()) / kThreads;
  return g_batches.load();
}

void across_calls(benchmark::State& state, bool window) {
  auto windowed =
      xcs::batch_op("double", double_all, xcs::batch_window(std::chrono::milliseconds(5)));
  double batches = 0, latency = 0;
  for (auto _ : state) {
    double l = 0;
    batches += window ? eight_at_once(windowed, l) : eight_at_once(batched, l);
    latency += l;
  }
  const auto n = static_cast<double>(state.iterations());
  state.counters["batches"] = batches / n;  // issue 19: <= 4 with the window, 8 without
  state.counters["call_latency_us"] = latency / n / 1000.0;
}

void BM_AcrossCalls_Window5ms(benchmark::State& state) { across_calls(state, true); }
void BM_AcrossCalls_NoWindow(benchmark::State& state) { across_calls(state, false); }

BENCHMARK(BM_Fn_Batch1000)->UseRealTime();
BENCHMARK(BM_Plan_Batch1000)->UseRealTime();
BENCHMARK(BM_Plan_PlainOp1000)->UseRealTime();
BENCHMARK(BM_Direct_Batch1)->UseRealTime();
BENCHMARK(BM_AcrossCalls_Window5ms)->UseRealTime()->Iterations(50);
BENCHMARK(BM_AcrossCalls_NoWindow)->UseRealTime()->Iterations(50);

}  // namespace

BENCHMARK_MAIN();
