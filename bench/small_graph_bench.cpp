// SPDX-License-Identifier: MIT
// Cached calls of tiny graphs (3 nodes, 7-node tree): what one jitted call costs at the least.
#include <future>

#include "bench_support.hpp"

namespace {

using xcs_bench::report;
using xcs_bench::run_loop;

auto inc = xcs::op("inc", [](int v) { return v + 1; });
auto dbl = xcs::op("dbl", [](int v) { return v * 2; });
auto sq = xcs::op("sq", [](int v) { return v * v; });
auto neg = xcs::op("neg", [](int v) { return 3 - v; });

// Two independent trivial ops and a combining `+`: 3 nodes.
auto three = [](auto x) {
  auto a = inc(x);
  auto b = dbl(x);
  return a + b;
};
// Four leaves, two `+`, one `+` at the root: 7 nodes.
auto seven = [](auto x) {
  auto a = inc(x);
  auto b = dbl(x);
  auto c = sq(x);
  auto d = neg(x);
  auto l = a + b;
  auto r = c + d;
  return l + r;
};

int g_x = 7;

void BM_Serial_Three(benchmark::State& state) {
  double ns = run_loop(state, [] { benchmark::DoNotOptimize(three(g_x)); });
  report(state, "three", ns, 3, true);
}

void BM_Async_Three(benchmark::State& state) {
  double ns = run_loop(state, [] {
    auto a = std::async(std::launch::async, [] { return inc(g_x); });
    int b = dbl(g_x);
    benchmark::DoNotOptimize(a.get() + b);
  });
  report(state, "three", ns, 3);
}

#if XCS_HAVE_TBB
void BM_TbbFlowGraph_Three(benchmark::State& state) {
  using namespace tbb::flow;
  graph g;
  int a = 0, b = 0, r = 0;
  continue_node<continue_msg> na(g, [&](const continue_msg&) {
    a = inc(g_x);
    return continue_msg{};
  });
  continue_node<continue_msg> nb(g, [&](const continue_msg&) {
    b = dbl(g_x);
    return continue_msg{};
  });
  continue_node<continue_msg> nc(g, [&](const continue_msg&) {
    r = a + b;
    return continue_msg{};
  });
  make_edge(na, nc);
  make_edge(nb, nc);
  double ns = run_loop(state, [&] {
    na.try_put(continue_msg{});
    nb.try_put(continue_msg{});
    g.wait_for_all();
    benchmark::DoNotOptimize(r);
  });
  report(state, "three", ns, 3);
}
#endif

void BM_Jit_Three(benchmark::State& state) {
  auto f = xcs::jit(three);
  f(g_x);  // trace and compile outside the timed loop
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(g_x)); });
  report(state, "three", ns, 3);
  state.counters["optimized"] = f.stats().optimized;
  state.counters["target_ns"] = 150;  // issue 17
}

void BM_Serial_Tree7(benchmark::State& state) {
  double ns = run_loop(state, [] { benchmark::DoNotOptimize(seven(g_x)); });
  report(state, "tree7", ns, 7, true);
}

void BM_Async_Tree7(benchmark::State& state) {
  double ns = run_loop(state, [] {
    auto a = std::async(std::launch::async, [] { return inc(g_x); });
    auto b = std::async(std::launch::async, [] { return dbl(g_x); });
    auto c = std::async(std::launch::async, [] { return sq(g_x); });
    int d = neg(g_x);
    int l = a.get() + b.get();
    benchmark::DoNotOptimize(l + (c.get() + d));
  });
  report(state, "tree7", ns, 7);
}

#if XCS_HAVE_TBB
void BM_TbbFlowGraph_Tree7(benchmark::State& state) {
  using namespace tbb::flow;
  graph g;
  int v[7] = {};
  using node_t = continue_node<continue_msg>;
  auto leaf = [&](int i, auto op) {
    return std::make_unique<node_t>(g, [&v, i, op](const continue_msg&) {
      v[i] = op(g_x);
      return continue_msg{};
    });
  };
  auto sum = [&](int i, int a, int b) {
    return std::make_unique<node_t>(g, [&v, i, a, b](const continue_msg&) {
      v[i] = v[a] + v[b];
      return continue_msg{};
    });
  };
  std::unique_ptr<node_t> n[7] = {leaf(0, inc), leaf(1, dbl), leaf(2, sq), leaf(3, neg),
                                  sum(4, 0, 1), sum(5, 2, 3), sum(6, 4, 5)};
  make_edge(*n[0], *n[4]);
  make_edge(*n[1], *n[4]);
  make_edge(*n[2], *n[5]);
  make_edge(*n[3], *n[5]);
  make_edge(*n[4], *n[6]);
  make_edge(*n[5], *n[6]);
  double ns = run_loop(state, [&] {
    for (int i = 0; i < 4; ++i) n[i]->try_put(continue_msg{});
    g.wait_for_all();
    benchmark::DoNotOptimize(v[6]);
  });
  report(state, "tree7", ns, 7);
}
#endif

void BM_Jit_Tree7(benchmark::State& state) {
  auto f = xcs::jit(seven);
  f(g_x);
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(g_x)); });
  report(state, "tree7", ns, 7);
  state.counters["optimized"] = f.stats().optimized;
  state.counters["target_ns"] = 300;  // issue 17
}

BENCHMARK(BM_Serial_Three)->UseRealTime();
BENCHMARK(BM_Async_Three)->UseRealTime();
#if XCS_HAVE_TBB
BENCHMARK(BM_TbbFlowGraph_Three)->UseRealTime();
#endif
BENCHMARK(BM_Jit_Three)->UseRealTime();
BENCHMARK(BM_Serial_Tree7)->UseRealTime();
BENCHMARK(BM_Async_Tree7)->UseRealTime();
#if XCS_HAVE_TBB
BENCHMARK(BM_TbbFlowGraph_Tree7)->UseRealTime();
#endif
BENCHMARK(BM_Jit_Tree7)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
