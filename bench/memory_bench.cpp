// SPDX-License-Identifier: MIT
// Memory: bytes a cached call allocates (counted by a replaced operator new), and plan bytes.
#include <cstdlib>
#include <new>

#include "bench_support.hpp"

namespace {

// Every thread's allocations, counted; relaxed, since they are read between calls only.
std::atomic<std::uint64_t> g_allocs{0};
std::atomic<std::uint64_t> g_bytes{0};

void* counted(std::size_t n, std::size_t align) {
  g_allocs.fetch_add(1, std::memory_order_relaxed);
  g_bytes.fetch_add(n, std::memory_order_relaxed);
  void* p =
      align > alignof(std::max_align_t)
          ? std::aligned_alloc(align, (std::max<std::size_t>(n, 1) + align - 1) / align * align)
          : std::malloc(std::max<std::size_t>(n, 1));
  if (!p) throw std::bad_alloc();
  return p;
}

}  // namespace

void* operator new(std::size_t n) { return counted(n, 0); }
void* operator new[](std::size_t n) { return counted(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return counted(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return counted(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n, 0);
  } catch (...) {
    return nullptr;
  }
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  try {
    return counted(n, 0);
  } catch (...) {
    return nullptr;
  }
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

using namespace xcs_bench;

auto inc = xcs::op("inc", [](int v) { return v + 1; });
auto dbl = xcs::op("dbl", [](int v) { return v * 2; });

auto three = [](auto x) {
  auto a = inc(x);
  auto b = dbl(x);
  return a + b;
};

const dag& wide() {
  static dag d = [] {
    dag g = layered_random(10, 100, 4, 5);
    uniform_costs(g, 0);
    return g;
  }();
  return d;
}

/// Allocations during `fn`, per call, over the benchmark loop.
template <class Fn>
void count_loop(benchmark::State& state, Fn&& fn) {
  std::uint64_t a0 = 0, b0 = 0, calls = 0, allocs = 0, bytes = 0;
  for (auto _ : state) {
    a0 = g_allocs.load();
    b0 = g_bytes.load();
    fn();
    allocs += g_allocs.load() - a0;
    bytes += g_bytes.load() - b0;
    ++calls;
  }
  state.counters["allocs_per_call"] = static_cast<double>(allocs) / static_cast<double>(calls);
  state.counters["bytes_per_call"] = static_cast<double>(bytes) / static_cast<double>(calls);
}

/// Plan figures for `body`, through a trace of our own: the public API does not expose the plan
/// a jitted object compiled.
template <class Body>
void plan_counters(benchmark::State& state, const Body& body) {
  auto g = trace_graph(body);
  xcs::detail::analysis a = xcs::detail::analyze(*g);
  xcs::detail::plan p(g, a);
  state.counters["plan_bytes_per_node"] = static_cast<double>(p.bytes_per_node());
  const auto run_bytes = static_cast<double>(xcs::detail::run_bytes(p));
  state.counters["run_bytes"] = run_bytes;
  state.counters["run_bytes_per_node"] = run_bytes / static_cast<double>(p.node_count());
  state.counters["nodes"] = static_cast<double>(p.node_count());
}

void BM_Serial_ThreeMemory(benchmark::State& state) {
  count_loop(state, [] { benchmark::DoNotOptimize(three(7)); });
}

void BM_Jit_ThreeMemory(benchmark::State& state) {
  auto f = xcs::jit(three);
  f(7);
  count_loop(state, [&] { benchmark::DoNotOptimize(f(7)); });
  plan_counters(state, three);
}

void BM_Serial_LayeredMemory(benchmark::State& state) {
  auto body = dag_body(wide(), uniform_call(0));
  count_loop(state, [&] { benchmark::DoNotOptimize(body(1)); });
}

void BM_Jit_LayeredMemory(benchmark::State& state) {
  auto body = dag_body(wide(), uniform_call(0));
  auto f = xcs::jit(body);
  f(1);
  count_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  plan_counters(state, body);
}

// What the first call allocates (trace, graph, analysis, plan, first run), per node.
void BM_Jit_LayeredFirstCallMemory(benchmark::State& state) {
  auto body = dag_body(wide(), uniform_call(0));
  count_loop(state, [&] {
    auto f = xcs::jit(body);
    benchmark::DoNotOptimize(f(1));
  });
  state.counters["bytes_per_node"] =
      state.counters["bytes_per_call"].value / static_cast<double>(wide().size());
  state.counters["allocs_per_node"] =
      state.counters["allocs_per_call"].value / static_cast<double>(wide().size());
}

BENCHMARK(BM_Serial_ThreeMemory)->UseRealTime();
BENCHMARK(BM_Jit_ThreeMemory)->UseRealTime();
BENCHMARK(BM_Serial_LayeredMemory)->UseRealTime();
BENCHMARK(BM_Jit_LayeredMemory)->UseRealTime();
BENCHMARK(BM_Jit_LayeredFirstCallMemory)->UseRealTime()->MinTime(0.2);

}  // namespace

BENCHMARK_MAIN();
