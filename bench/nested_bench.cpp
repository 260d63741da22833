// SPDX-License-Identifier: MIT
// Waiting nodes: 1,000 outer nodes each calling a 50-node inner jitted graph, vs flattened.
#include <cstdio>
#include <cstdlib>
#include <numeric>

#include "bench_support.hpp"

namespace {

using namespace xcs_bench;

constexpr int kOuter = 1000;
constexpr int kInner = 50;
constexpr std::int64_t kOpNs = 2000;

auto work = xcs::op("work", [](int v) {
  spin_ns(kOpNs);
  return v + 1;
});
auto sum = xcs::op(
    "sum", [](const std::vector<int>& v) { return std::accumulate(v.begin(), v.end(), 0); });

// The inner graph: 50 independent ops on one input.
auto inner_body = [](auto x) {
  std::vector<decltype(work(x))> out;
  for (int i = 0; i < kInner; ++i) out.push_back(work(x));
  return out;
};
auto inner = xcs::jit(inner_body);

// One outer node: waits on the inner graph, then sums it.
auto outer_op = xcs::op("outer", [](int x) {
  auto v = inner(x);
  return std::accumulate(v.begin(), v.end(), 0);
});

auto nested_body = [](const auto& xs) {
  std::vector<decltype(outer_op(xs[0]))> out;
  for (int i = 0; i < kOuter; ++i) out.push_back(outer_op(xs[i]));
  return out;
};

// The same work in one graph: per outer node, 50 ops and a sum of their pack.
auto flat_body = [](const auto& xs) {
  using V = decltype(work(xs[0]));
  std::vector<decltype(sum(std::vector<V>{}))> out;
  for (int i = 0; i < kOuter; ++i) {
    std::vector<V> part;
    for (int k = 0; k < kInner; ++k) part.push_back(work(xs[i]));
    out.push_back(sum(part));
  }
  return out;
};

const std::vector<int> kXs(kOuter, 1);

// Aborts the program if one iteration hangs: a deadlock must show, not stall `make bench`.
std::atomic<std::int64_t> g_heartbeat{0};
void start_watchdog() {
  static std::once_flag once;
  std::call_once(once, [] {
    std::thread([] {
      for (;;) {
        std::this_thread::sleep_for(std::chrono::seconds(5));
        std::int64_t h = g_heartbeat.load();
        if (h != 0 && now_ns() - h > 60'000'000'000) {
          std::fprintf(stderr, "nested_bench: an iteration ran for 60 s: deadlock\n");
          std::_Exit(2);
        }
      }
    }).detach();
  });
}

template <class Fn>
double guarded_loop(benchmark::State& state, Fn&& fn) {
  start_watchdog();
  double ns = run_loop(state, [&] {
    g_heartbeat.store(now_ns());
    fn();
  });
  g_heartbeat.store(0);
  return ns;
}

void BM_Serial_Nested(benchmark::State& state) {
  double ns = guarded_loop(state, [] { benchmark::DoNotOptimize(flat_body(kXs)); });
  report(state, "nested", ns, kOuter * (kInner + 1), true);
}

void BM_Jit_Flattened(benchmark::State& state) {
  xcs::set_thread_count(static_cast<unsigned>(state.range(0)));
  auto f = xcs::jit(flat_body);
  f(kXs);
  double ns = guarded_loop(state, [&] { benchmark::DoNotOptimize(f(kXs)); });
  report(state, "nested", ns, kOuter * (kInner + 1));
  serial_times()["flat/" + std::to_string(state.range(0))] = ns;
}

void BM_Jit_Nested(benchmark::State& state) {
  xcs::set_thread_count(static_cast<unsigned>(state.range(0)));
  auto f = xcs::jit(nested_body);
  f(kXs);
  double ns = guarded_loop(state, [&] { benchmark::DoNotOptimize(f(kXs)); });
  report(state, "nested", ns, kOuter * (kInner + 1));
  auto it = serial_times().find("flat/" + std::to_string(state.range(0)));
  if (it != serial_times().end()) state.counters["vs_flattened"] = ns / it->second;
  state.counters["target_vs_flattened"] = 1.2;
  state.counters["flagged_blocking"] = ops_flagged_blocking([](auto x) { return inner_body(x); });
}

#if XCS_HAVE_TBB
// TBB's own nesting: an outer parallel_for whose bodies run an inner parallel_for.
void BM_TbbParallelFor_Nested(benchmark::State& state) {
  std::vector<int> out(kOuter);
  double ns = guarded_loop(state, [&] {
    tbb::parallel_for(0, kOuter, [&](int i) {
      std::vector<int> v(kInner);
      tbb::parallel_for(0, kInner, [&](int k) { v[k] = work(kXs[i]); });
      out[i] = std::accumulate(v.begin(), v.end(), 0);
    });
    benchmark::DoNotOptimize(out.data());
  });
  report(state, "nested", ns, kOuter * (kInner + 1));
}
#endif

BENCHMARK(BM_Serial_Nested)->UseRealTime()->Iterations(3);
#if XCS_HAVE_TBB
BENCHMARK(BM_TbbParallelFor_Nested)->UseRealTime()->Iterations(5);
#endif
BENCHMARK(BM_Jit_Flattened)->Arg(1)->UseRealTime()->Iterations(5);
BENCHMARK(BM_Jit_Nested)->Arg(1)->UseRealTime()->Iterations(5);
BENCHMARK(BM_Jit_Flattened)->Arg(2)->UseRealTime()->Iterations(5);
BENCHMARK(BM_Jit_Nested)->Arg(2)->UseRealTime()->Iterations(5);
BENCHMARK(BM_Jit_Flattened)->Arg(16)->UseRealTime()->Iterations(5);
BENCHMARK(BM_Jit_Nested)->Arg(16)->UseRealTime()->Iterations(5);

}  // namespace

BENCHMARK_MAIN();
