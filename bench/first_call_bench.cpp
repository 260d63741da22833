// SPDX-License-Identifier: MIT
// First calls: trace + analyze + compile + run per node, from 10 to 1,000,000 nodes.
#include "bench_support.hpp"

namespace {

using namespace xcs_bench;

// A layered graph with in-degree <= 2: wide enough to be parallel, with real edges.
const dag& graph_of(std::int64_t n) {
  static std::map<std::int64_t, dag> dags;
  auto it = dags.find(n);
  if (it == dags.end()) {
    std::uint32_t width = static_cast<std::uint32_t>(std::clamp<std::int64_t>(n / 10, 2, 100));
    std::uint32_t layers = static_cast<std::uint32_t>(n / width);
    dag d = layered_random(layers, width, 2, 7);
    uniform_costs(d, 0);
    it = dags.emplace(n, std::move(d)).first;
  }
  return it->second;
}

void BM_Serial_FirstCall(benchmark::State& state) {
  const dag& d = graph_of(state.range(0));
  auto body = dag_body(d, uniform_call(0));
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(body(1)); });
  report(state, "first/" + std::to_string(state.range(0)), ns, d.size(), true);
}

void BM_Jit_FirstCall(benchmark::State& state) {
  const dag& d = graph_of(state.range(0));
  auto body = dag_body(d, uniform_call(0));
  std::int64_t first_ns = 0, cached_ns = 0, n = 0;
  for (auto _ : state) {
    std::int64_t t0 = now_ns();
    auto f = xcs::jit(body);  // a fresh object: its first call traces
    benchmark::DoNotOptimize(f(1));
    std::int64_t t1 = now_ns();
    benchmark::DoNotOptimize(f(1));  // the same call, cached, for comparison
    std::int64_t t2 = now_ns();
    first_ns += t1 - t0;
    cached_ns += t2 - t1;
    ++n;
    if (n == 1) state.counters["optimized"] = f.stats().optimized;
  }
  double nodes = static_cast<double>(d.size());
  state.counters["nodes"] = nodes;
  state.counters["ns_per_node"] = static_cast<double>(first_ns) / (static_cast<double>(n) * nodes);
  state.counters["cached_ns_per_node"] =
      static_cast<double>(cached_ns) / (static_cast<double>(n) * nodes);
  state.counters["target_ns_per_node"] = 2000;
}

// The compile half alone, through the internal graph / analysis / plan stages: trace the body,
// analyze the graph and build the plan, without running it.
void BM_Compile_FirstCall(benchmark::State& state) {
  const dag& d = graph_of(state.range(0));
  auto body = dag_body(d, uniform_call(0));
  std::int64_t trace_ns = 0, total_ns = 0, n = 0;
  for (auto _ : state) {
    std::int64_t t0 = now_ns();
    auto g = trace_graph(body);
    std::int64_t t1 = now_ns();
    xcs::detail::analysis a = xcs::detail::analyze(*g);
    xcs::detail::plan p(g, a);
    benchmark::DoNotOptimize(p.node_count());
    total_ns += now_ns() - t0;
    trace_ns += t1 - t0;
    ++n;
  }
  double nodes = static_cast<double>(d.size());
  state.counters["nodes"] = nodes;
  state.counters["ns_per_node"] = static_cast<double>(total_ns) / (static_cast<double>(n) * nodes);
  state.counters["trace_ns_per_node"] =
      static_cast<double>(trace_ns) / (static_cast<double>(n) * nodes);
}

// Each iteration of BM_Jit_FirstCall times one first call and one cached call (and the
// destruction of the object); the counters split them.
const int kRegistered = [] {
  for (std::int64_t n : {10, 100, 1000, 10'000, 100'000, 1'000'000}) {
    auto* s = benchmark::RegisterBenchmark("BM_Serial_FirstCall", BM_Serial_FirstCall)
                  ->Arg(n)
                  ->UseRealTime();
    auto* j =
        benchmark::RegisterBenchmark("BM_Jit_FirstCall", BM_Jit_FirstCall)->Arg(n)->UseRealTime();
    auto* c = benchmark::RegisterBenchmark("BM_Compile_FirstCall", BM_Compile_FirstCall)
                  ->Arg(n)
                  ->UseRealTime();
    if (n >= 1'000'000) {
      s->Iterations(3);
      j->Iterations(2);
      c->Iterations(2);
    } else if (n >= 100'000) {
      s->Iterations(20);
      j->Iterations(5);
      c->Iterations(5);
    } else {
      s->MinTime(0.1);
      j->MinTime(0.3);
      c->MinTime(0.2);
    }
  }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
