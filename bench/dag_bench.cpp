// SPDX-License-Identifier: MIT
// Fine-grained DAGs (fan-out, tree, wavefront, layered random) with 2 us and trivial ops.
#include "bench_support.hpp"

namespace {

using namespace xcs_bench;

struct shape {
  const char* name;
  dag (*make)();
};

const shape kShapes[] = {
    {"FanOut", [] { return fan_out(4000); }},
    {"BinaryTree", [] { return binary_tree(12); }},  // 4095 nodes
    {"Wavefront", [] { return wavefront(48, 48); }},
    {"LayeredRandom", [] { return layered_random(40, 100, 4, 42); }},
};

// The graphs live for the whole program: bodies and TBB graphs refer to them.
const dag& get_dag(int s) {
  static std::vector<dag> dags = [] {
    std::vector<dag> v;
    for (const auto& sh : kShapes) v.push_back(sh.make());
    return v;
  }();
  return dags[s];
}

std::string key(int s, std::int64_t op_ns) {
  return std::string(kShapes[s].name) + "/" + std::to_string(op_ns);
}

void BM_Serial(benchmark::State& state, int s, std::int64_t op_ns) {
  const dag& d = get_dag(s);
  auto body = dag_body(d, uniform_call(op_ns));
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(body(1)); });
  report(state, key(s, op_ns), ns, d.size(), true);
}

#if XCS_HAVE_TBB
void BM_TbbFlowGraph(benchmark::State& state, int s, std::int64_t op_ns) {
  const dag& d = get_dag(s);
  tbb_dag g(d, uniform_call(op_ns));
  g.run(1);  // warm, as the jitted function is: TBB starts its worker threads on first use
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(g.run(1)); });
  report(state, key(s, op_ns), ns, d.size());
}
#endif

void BM_Jit(benchmark::State& state, int s, std::int64_t op_ns) {
  const dag& d = get_dag(s);
  auto body = dag_body(d, uniform_call(op_ns));
  auto f = xcs::jit(body);
  f(1);  // trace and compile outside the timed loop
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  report(state, key(s, op_ns), ns, d.size());
  auto st = f.stats();
  state.counters["optimized"] = st.optimized;
  state.counters["measured_speedup"] = st.speedup;
  state.counters["flagged_blocking"] = ops_flagged_blocking(body);
}

// Registered in order Serial, TBB, Jit per graph so that the speedups use this run's serial.
const int kRegistered = [] {
  for (std::int64_t op_ns : {std::int64_t{2000}, std::int64_t{0}}) {
    const char* suffix = op_ns ? "/op_ns:2000" : "/op_ns:0";
    for (int s = 0; s < 4; ++s) {
      std::string name = kShapes[s].name;
      benchmark::RegisterBenchmark(("BM_Serial_" + name + suffix).c_str(), BM_Serial, s, op_ns)
          ->UseRealTime()
          ->MinTime(0.3);
#if XCS_HAVE_TBB
      benchmark::RegisterBenchmark(("BM_TbbFlowGraph_" + name + suffix).c_str(), BM_TbbFlowGraph, s,
                                   op_ns)
          ->UseRealTime()
          ->MinTime(0.3);
#endif
      benchmark::RegisterBenchmark(("BM_Jit_" + name + suffix).c_str(), BM_Jit, s, op_ns)
          ->UseRealTime()
          ->MinTime(0.3);
    }
  }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
