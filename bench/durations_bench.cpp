// SPDX-License-Identifier: MIT
// Varying op durations (exponential, mean 20 us): makespan vs the bound and vs a barrier per level.
#include "bench_support.hpp"

namespace {

using namespace xcs_bench;

// 25 layers of 40 nodes, in-degree <= 4: 1,000 nodes, about 20 ms of work.
const dag& the_dag() {
  static dag d = [] {
    dag g = layered_random(25, 40, 4, 2024);
    exponential_costs(g, 20'000, 99);
    return g;
  }();
  return d;
}

void bound_counters(benchmark::State& state, double ns) {
  const dag& d = the_dag();
  double cp = static_cast<double>(d.critical_path_ns());
  double work = static_cast<double>(d.total_ns());
  double bound = std::max(cp, work / cores());
  state.counters["makespan_us"] = ns / 1e3;
  state.counters["bound_us"] = bound / 1e3;
  state.counters["critical_path_us"] = cp / 1e3;
  state.counters["work_us"] = work / 1e3;
  state.counters["vs_bound"] = ns / bound;
  auto it = serial_times().find("levels");
  if (it != serial_times().end()) state.counters["vs_levels"] = ns / it->second;
}

void BM_Serial_Durations(benchmark::State& state) {
  auto body = dag_body(the_dag(), indexed_call(the_dag()));
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(body(1)); });
  report(state, "durations", ns, the_dag().size(), true);
  bound_counters(state, ns);
}

// The barrier-per-level baseline with std::threads (one per core, the caller included).
void BM_Levels_Durations(benchmark::State& state) {
  level_runner r(the_dag(), indexed_call(the_dag()), cores());
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(r.run(1)); });
  report(state, "durations", ns, the_dag().size());
  serial_times()["levels"] = ns;
  bound_counters(state, ns);
}

#if XCS_HAVE_TBB
// The barrier-per-level baseline with one tbb::parallel_for per level.
void BM_TbbLevels_Durations(benchmark::State& state) {
  const dag& d = the_dag();
  auto call = indexed_call(d);
  auto levels = d.levels();
  std::vector<int> vals(d.size());
  double ns = run_loop(state, [&] {
    for (const auto& lv : levels) {
      tbb::parallel_for(std::size_t{0}, lv.size(), std::size_t{1},
                        [&](std::size_t k) { vals[lv[k]] = call_node(d, call, vals, lv[k], 1); });
    }
    benchmark::DoNotOptimize(vals.back());
  });
  report(state, "durations", ns, d.size());
  bound_counters(state, ns);
}

void BM_TbbFlowGraph_Durations(benchmark::State& state) {
  tbb_dag g(the_dag(), indexed_call(the_dag()));
  g.run(1);  // warm, as the jitted function is: TBB starts its worker threads on first use
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(g.run(1)); });
  report(state, "durations", ns, the_dag().size());
  bound_counters(state, ns);
}
#endif

void BM_Jit_Durations(benchmark::State& state) {
  auto body = dag_body(the_dag(), indexed_call(the_dag()));
  auto f = xcs::jit(body);
  f(1);
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  report(state, "durations", ns, the_dag().size());
  bound_counters(state, ns);
  state.counters["target_vs_bound"] = 1.05;
  state.counters["flagged_blocking"] = ops_flagged_blocking(body);
}

BENCHMARK(BM_Serial_Durations)->UseRealTime()->MinTime(0.5);
BENCHMARK(BM_Levels_Durations)->UseRealTime()->MinTime(0.5);
#if XCS_HAVE_TBB
BENCHMARK(BM_TbbLevels_Durations)->UseRealTime()->MinTime(0.5);
BENCHMARK(BM_TbbFlowGraph_Durations)->UseRealTime()->MinTime(0.5);
#endif
BENCHMARK(BM_Jit_Durations)->UseRealTime()->MinTime(0.5);

}  // namespace

BENCHMARK_MAIN();
