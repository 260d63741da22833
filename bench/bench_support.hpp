// SPDX-License-Identifier: MIT
// Shared pieces of the benchmarks: busy-spin work, DAG shapes, and the baselines that run them.
#pragma once

#include <benchmark/benchmark.h>
#include <unistd.h>
#include <xcs/xcs.hpp>

#include "xcs/detail/pipeline.hpp"

#include <algorithm>
#include <atomic>
#include <barrier>
#include <chrono>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

#if XCS_HAVE_TBB
#include <tbb/flow_graph.h>
#include <tbb/parallel_for.h>
#endif

namespace xcs_bench {

inline std::int64_t now_ns() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

/// Busy-spins for `ns` nanoseconds of wall time: a CPU-bound op of a known length.
inline void spin_ns(std::int64_t ns) {
  if (ns <= 0) return;
  std::int64_t end = now_ns() + ns;
  while (now_ns() < end) {
  }
}

/// Busy-spins for `ns` nanoseconds of this thread's CPU time: the same work whether or not
/// the thread is preempted meanwhile (for long CPU-bound ops on a shared machine).
inline void spin_cpu_ns(std::int64_t ns) {
  auto cpu = [] {
    timespec ts{};
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
  };
  std::int64_t end = cpu() + ns;
  while (cpu() < end) {
  }
}

/// Cores of this machine, for the bound max(critical path, work / cores).
inline unsigned cores() { return std::max(1u, std::thread::hardware_concurrency()); }

/// A DAG in topological order: node i reads only nodes < i.
struct dag {
  std::vector<std::vector<std::uint32_t>> preds;
  std::vector<std::int64_t> cost_ns;  ///< per node, for ops that spin by node index

  std::size_t size() const { return preds.size(); }

  /// Nodes nothing reads: what a body returns.
  std::vector<std::uint32_t> sinks() const {
    std::vector<char> read(size(), 0);
    for (const auto& p : preds)
      for (auto q : p) read[q] = 1;
    std::vector<std::uint32_t> out;
    for (std::uint32_t i = 0; i < size(); ++i)
      if (!read[i]) out.push_back(i);
    return out;
  }
  /// Nodes grouped by depth (a node is one deeper than its deepest input).
  std::vector<std::vector<std::uint32_t>> levels() const {
    std::vector<std::uint32_t> depth(size(), 0);
    std::vector<std::vector<std::uint32_t>> out;
    for (std::uint32_t i = 0; i < size(); ++i) {
      for (auto q : preds[i]) depth[i] = std::max(depth[i], depth[q] + 1);
      if (depth[i] >= out.size()) out.resize(depth[i] + 1);
      out[depth[i]].push_back(i);
    }
    return out;
  }
  std::int64_t total_ns() const {
    std::int64_t t = 0;
    for (auto c : cost_ns) t += c;
    return t;
  }
  std::int64_t critical_path_ns() const {
    std::vector<std::int64_t> finish(size(), 0);
    std::int64_t best = 0;
    for (std::uint32_t i = 0; i < size(); ++i) {
      std::int64_t start = 0;
      for (auto q : preds[i]) start = std::max(start, finish[q]);
      finish[i] = start + cost_ns[i];
      best = std::max(best, finish[i]);
    }
    return best;
  }
};

/// `n` independent nodes.
inline dag fan_out(std::uint32_t n) {
  dag d;
  d.preds.resize(n);
  return d;
}

/// A fork tree of `depth` levels: node i reads its parent (i - 1) / 2.
inline dag binary_tree(std::uint32_t depth) {
  dag d;
  std::uint32_t n = (1u << depth) - 1;
  d.preds.resize(n);
  for (std::uint32_t i = 1; i < n; ++i) d.preds[i] = {(i - 1) / 2};
  return d;
}

/// A `w` x `h` grid: cell (i, j) reads (i - 1, j) and (i, j - 1).
inline dag wavefront(std::uint32_t w, std::uint32_t h) {
  dag d;
  d.preds.resize(std::size_t{w} * h);
  for (std::uint32_t i = 0; i < h; ++i) {
    for (std::uint32_t j = 0; j < w; ++j) {
      auto& p = d.preds[i * w + j];
      if (i > 0) p.push_back((i - 1) * w + j);
      if (j > 0) p.push_back(i * w + j - 1);
    }
  }
  return d;
}

/// `layers` layers of `width` nodes; each node after the first layer reads 1..max_in distinct
/// random nodes of the layer before it (seeded, so every run builds the same graph).
inline dag layered_random(std::uint32_t layers, std::uint32_t width, std::uint32_t max_in,
                          std::uint32_t seed) {
  dag d;
  std::mt19937 rng(seed);
  d.preds.resize(std::size_t{layers} * width);
  for (std::uint32_t l = 1; l < layers; ++l) {
    for (std::uint32_t k = 0; k < width; ++k) {
      auto& p = d.preds[l * width + k];
      std::uint32_t in = 1 + rng() % std::min(max_in, width);
      while (p.size() < in) {
        std::uint32_t q = (l - 1) * width + rng() % width;
        if (std::find(p.begin(), p.end(), q) == p.end()) p.push_back(q);
      }
      std::sort(p.begin(), p.end());
    }
  }
  return d;
}

/// Sets every node's cost to `ns`.
inline void uniform_costs(dag& d, std::int64_t ns) { d.cost_ns.assign(d.size(), ns); }

/// Draws node costs from an exponential distribution of mean `mean_ns` (seeded).
inline void exponential_costs(dag& d, double mean_ns, std::uint32_t seed) {
  std::mt19937 rng(seed);
  std::exponential_distribution<double> dist(1.0 / mean_ns);
  d.cost_ns.resize(d.size());
  for (auto& c : d.cost_ns) c = static_cast<std::int64_t>(dist(rng));
}

/// Calls `call(i, inputs...)` for node i with its inputs taken from `vals` (nodes without
/// inputs get `x`). `call` is the same adapter the jitted body uses, called with plain values.
template <class V, class X, class Call>
V call_node(const dag& d, const Call& call, const std::vector<V>& vals, std::uint32_t i,
            const X& x) {
  const auto& p = d.preds[i];
  int k = static_cast<int>(i);
  switch (p.size()) {
    case 0:
      return call(k, x);
    case 1:
      return call(k, vals[p[0]]);
    case 2:
      return call(k, vals[p[0]], vals[p[1]]);
    case 3:
      return call(k, vals[p[0]], vals[p[1]], vals[p[2]]);
    default:
      return call(k, vals[p[0]], vals[p[1]], vals[p[2]], vals[p[3]]);
  }
}

/// The body of a DAG workload: one op call per node in index order, returning the sinks.
/// Called with a plain int it is the direct (serial) call; jitted it traces to the same DAG.
template <class Call>
auto dag_body(const dag& d, Call call) {
  return [&d, call, sinks = d.sinks()](auto x) {
    using V = decltype(call(0, x));
    std::vector<V> vals;
    vals.reserve(d.size());
    for (std::uint32_t i = 0; i < d.size(); ++i) vals.push_back(call_node(d, call, vals, i, x));
    std::vector<V> out;
    out.reserve(sinks.size());
    for (auto s : sinks) out.push_back(vals[s]);
    return out;
  };
}

/// An op that spins `ns` and returns 1 + the sum of its inputs; the adapter ignores the index.
inline auto uniform_call(std::int64_t ns) {
  auto work = xcs::op("work", [ns](const auto&... in) {
    spin_ns(ns);
    return (1 + ... + in);
  });
  return [work](int, const auto&... in) { return work(in...); };
}

/// An op that spins its node's own cost (read from `d`), passed as a constant input.
inline auto indexed_call(const dag& d) {
  auto work = xcs::op("work", [c = d.cost_ns.data()](int i, const auto&... in) {
    spin_ns(c[i]);
    return (i + ... + in);
  });
  return [work](int i, const auto&... in) { return work(i, in...); };
}

/// Remembers per-iteration times of the serial baselines so that later benchmarks of the same
/// run report their speedup against them.
inline std::map<std::string, double>& serial_times() {
  static std::map<std::string, double> m;
  return m;
}

/// Runs the benchmark loop; returns the mean wall time per iteration in ns.
template <class Fn>
double run_loop(benchmark::State& state, Fn&& fn) {
  std::int64_t t0 = now_ns(), n = 0;
  for (auto _ : state) {
    fn();
    ++n;
  }
  return n ? static_cast<double>(now_ns() - t0) / static_cast<double>(n) : 0.0;
}

/// Mean wall time per call of `fn` in ns, over at least `min_ns` of calls: the direct call
/// timed inside a jitted benchmark's own function, so that an overhead counter subtracts two
/// figures of the same run. Calls run in doubling batches between clock reads, so a call of a
/// few ns is not swamped by the clock.
template <class Fn>
double mean_call_ns(Fn&& fn, std::int64_t min_ns = 100'000'000) {
  std::int64_t calls = 0, batch = 1, t0 = now_ns(), t = t0;
  while (t - t0 < min_ns) {
    for (std::int64_t i = 0; i < batch; ++i) fn();
    calls += batch;
    batch = std::min<std::int64_t>(batch * 2, 1 << 16);
    t = now_ns();
  }
  return calls ? static_cast<double>(t - t0) / static_cast<double>(calls) : 0.0;
}

/// Sets the usual counters: ns per node, and speedup against serial run `key` if it ran.
inline void report(benchmark::State& state, const std::string& key, double ns_per_iter,
                   std::size_t nodes, bool is_serial = false) {
  state.counters["nodes"] = static_cast<double>(nodes);
  state.counters["ns_per_node"] =
      ns_per_iter / static_cast<double>(std::max<std::size_t>(1, nodes));
  if (is_serial) {
    serial_times()[key] = ns_per_iter;
    state.counters["speedup"] = 1.0;
    return;
  }
  auto it = serial_times().find(key);
  if (it != serial_times().end() && ns_per_iter > 0) {
    state.counters["speedup"] = it->second / ns_per_iter;
    state.counters["overhead_ns_per_node"] =
        (ns_per_iter - it->second) / static_cast<double>(std::max<std::size_t>(1, nodes));
  }
}

/// Traces `body` on one int argument in a trace of our own and returns its IR graph: the public
/// API does not expose the graph or plan a jitted object compiled, so benchmarks that need
/// them (plan memory, which ops were flagged as blocking) retrace.
template <class Body>
std::shared_ptr<const xcs::detail::graph> trace_graph(const Body& body) {
  xcs::detail::trace_context ctx(xcs::detail::trace_mode::dry, {});
  {
    xcs::detail::trace_context::scope scope(ctx);
    auto x = xcs::detail::traced_access::make<int>(&ctx, ctx.ir().add_argument(0, typeid(int)));
    (void)body(x);
  }
  return std::make_shared<const xcs::detail::graph>(std::move(ctx.ir()));
}

/// Distinct ops of `body` that the scheduler has flagged as blocking (observed sitting in the
/// op without using CPU), though none of them blocks.
template <class Body>
int ops_flagged_blocking(const Body& body) {
  auto g = trace_graph(body);
  std::vector<const xcs::detail::op_identity*> seen;
  int flagged = 0;
  for (const auto& n : g->nodes()) {
    if (!n.op || std::find(seen.begin(), seen.end(), n.op.get()) != seen.end()) continue;
    seen.push_back(n.op.get());
    flagged += xcs::detail::op_runtime::of(*n.op).observed_blocking.load() ? 1 : 0;
  }
  return flagged;
}

#if XCS_HAVE_TBB
/// The same DAG as a oneTBB flow graph of continue_nodes, built once and run many times. Each
/// node computes its value with the same adapter as the serial and jitted runs.
template <class Call>
class tbb_dag {
 public:
  tbb_dag(const dag& d, Call call) : d_(d), call_(std::move(call)), vals_(d.size(), 0) {
    nodes_.reserve(d.size());
    for (std::uint32_t i = 0; i < d.size(); ++i) {
      nodes_.push_back(std::make_unique<node_t>(g_, [this, i](const tbb::flow::continue_msg&) {
        vals_[i] = call_node(d_, call_, vals_, i, x_);
        return tbb::flow::continue_msg{};
      }));
    }
    for (std::uint32_t i = 0; i < d.size(); ++i) {
      if (d.preds[i].empty()) roots_.push_back(i);
      for (auto q : d.preds[i]) tbb::flow::make_edge(*nodes_[q], *nodes_[i]);
    }
  }
  int run(int x) {
    x_ = x;
    for (auto r : roots_) nodes_[r]->try_put(tbb::flow::continue_msg{});
    g_.wait_for_all();
    return vals_.back();
  }

 private:
  using node_t = tbb::flow::continue_node<tbb::flow::continue_msg>;
  const dag& d_;
  Call call_;
  std::vector<int> vals_;
  int x_ = 0;
  tbb::flow::graph g_;
  std::vector<std::unique_ptr<node_t>> nodes_;
  std::vector<std::uint32_t> roots_;
};
#endif

/// Level by level with a barrier per level: `threads` std::threads (the caller is one) share
/// each level through an atomic index, then meet at a std::barrier.
template <class Call>
class level_runner {
 public:
  level_runner(const dag& d, Call call, unsigned threads)
      : d_(d),
        call_(std::move(call)),
        levels_(d.levels()),
        vals_(d.size(), 0),
        next_(levels_.size()),
        start_(threads),
        done_(threads),
        level_barrier_(threads),
        reset_barrier_(threads) {
    for (unsigned t = 1; t < threads; ++t) {
      pool_.emplace_back([this] {
        for (;;) {
          start_.arrive_and_wait();
          if (stop_) return;
          work();
          done_.arrive_and_wait();
        }
      });
    }
  }
  ~level_runner() {
    stop_ = true;
    start_.arrive_and_wait();
    for (auto& t : pool_) t.join();
  }
  int run(int x) {
    x_ = x;
    start_.arrive_and_wait();
    work();
    done_.arrive_and_wait();
    return vals_.back();
  }

 private:
  void work() {
    for (std::size_t l = 0; l < levels_.size(); ++l) {
      const auto& lv = levels_[l];
      for (std::size_t k = next_[l].fetch_add(1); k < lv.size(); k = next_[l].fetch_add(1)) {
        vals_[lv[k]] = call_node(d_, call_, vals_, lv[k], x_);
      }
      level_barrier_.arrive_and_wait();
    }
    // Reset the counters for the next run; everyone is past the last level barrier.
    if (reset_turn_.fetch_add(1) == 0) {
      for (auto& n : next_) n.store(0);
    }
    reset_barrier_.arrive_and_wait();
    reset_turn_.store(0);
  }

  const dag& d_;
  Call call_;
  std::vector<std::vector<std::uint32_t>> levels_;
  std::vector<int> vals_;
  int x_ = 0;
  std::vector<std::atomic<std::size_t>> next_;
  std::barrier<> start_, done_, level_barrier_, reset_barrier_;
  std::atomic<int> reset_turn_{0};
  std::atomic<bool> stop_{false};
  std::vector<std::thread> pool_;
};

// ---- process figures (Linux /proc) ---------------------------------------------------------

/// Threads of this process.
inline int process_threads() {
  int n = 0;
  for ([[maybe_unused]] const auto& e : std::filesystem::directory_iterator("/proc/self/task")) ++n;
  return n;
}

/// Peak resident memory since the last reset_peak_rss(), in MiB (VmHWM).
inline double peak_rss_mib() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "VmHWM:") {
      double kib = 0;
      in >> kib;
      return kib / 1024.0;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

/// Resident memory now, in MiB.
inline double rss_mib() {
  std::ifstream in("/proc/self/statm");
  double pages = 0, resident = 0;
  in >> pages >> resident;
  return resident * static_cast<double>(sysconf(_SC_PAGESIZE)) / (1024.0 * 1024.0);
}

/// Resets VmHWM to the current RSS (Linux: writing 5 to clear_refs).
inline void reset_peak_rss() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace xcs_bench
