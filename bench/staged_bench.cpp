// SPDX-License-Identifier: MIT
// Staged calls: bodies that read their values (an `if` on an op's result), jitted, against the
// direct call of the same body. A staged call runs the body on every call; each op starts as
// soon as its inputs are ready and a read waits only for the ops its value depends on.
#include <stdexcept>

#include "bench_support.hpp"

namespace {

using namespace xcs_bench;

void nap_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

/// Checks once, before timing, that the jitted call returns what the direct call returns (this
/// is also the jitted object's first call, which traces). False: the benchmark is skipped.
template <class F, class Body, class... Args>
bool same_result(benchmark::State& state, const F& f, const Body& body, const Args&... args) {
  if (f(args...) == body(args...)) return true;
  state.SkipWithError("the jitted call returned something else than the direct call");
  return false;
}

/// Counters of a staged benchmark: the expected wall time, and (for the jitted object) that its
/// calls ran staged and how many reads waited, per call.
template <class Stats>
void staged_counters(benchmark::State& state, const Stats& st) {
  const double calls = static_cast<double>(std::max<std::uint64_t>(1, st.calls));
  state.counters["staged_calls"] = static_cast<double>(st.staged_calls) / calls;
  state.counters["fallback_calls"] = static_cast<double>(st.fallback_calls);
  state.counters["syncs_per_call"] = static_cast<double>(st.syncs) / calls;
}

/// Remembers the direct time of `key`, or reports the speedup of a jitted run against it.
void speedup(benchmark::State& state, const std::string& key, double ns, bool direct) {
  if (direct) {
    serial_times()[key] = ns;
    return;
  }
  auto it = serial_times().find(key);
  if (it != serial_times().end() && ns > 0) state.counters["speedup"] = it->second / ns;
}

// ---- a branch on a judge of three candidates --------------------------------------------
// Every op sleeps 40 ms. q = 1 takes the short branch (judge 6): direct 3 gen + judge + synth
// = 200 ms, jitted gen || gen || gen, judge, synth = 120 ms. q = 2 takes the long branch
// (judge 2): direct 5 gen + judge + 2 synth = 320 ms; jitted 3 gen at once, judge, then
// gen(q, 4) || gen(q, 5) (issued after the read), synth, synth = 200 ms.

constexpr int kBranchOpMs = 40;

auto gen = xcs::op(
    "gen",
    [](int q, int k) {
      nap_ms(kBranchOpMs);
      return q * k;
    },
    xcs::blocking);
auto judge = xcs::op(
    "judge",
    [](int a, int b, int c) {
      nap_ms(kBranchOpMs);
      return (a + b + c) % 10;
    },
    xcs::blocking);
auto synth = xcs::op(
    "synth",
    [](int a, int b) {
      nap_ms(kBranchOpMs);
      return a + b;
    },
    xcs::blocking);

auto branch_body = [](auto q) {
  auto a = gen(q, 1), b = gen(q, 2), c = gen(q, 3);
  if (judge(a, b, c) >= 5) return synth(a, b);
  return synth(synth(gen(q, 4), gen(q, 5)), c);
};

bool short_branch(int q) { return (6 * q) % 10 >= 5; }

void branch_setup(benchmark::State& state, bool jitted) {
  const int q = static_cast<int>(state.range(0));
  const bool s = short_branch(q);
  state.SetLabel(s ? "short branch" : "long branch");
  state.counters["expected_ms"] = jitted ? (s ? 120 : 200) : (s ? 200 : 320);
}

void BM_Direct_StagedBranch(benchmark::State& state) {
  branch_setup(state, false);
  const int q = static_cast<int>(state.range(0));
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(branch_body(q)); });
  speedup(state, "branch/" + std::to_string(q), ns, true);
}

void BM_Jit_StagedBranch(benchmark::State& state) {
  branch_setup(state, true);
  const int q = static_cast<int>(state.range(0));
  auto f = xcs::jit(branch_body);
  if (!same_result(state, f, branch_body, q)) return;
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(q)); });
  staged_counters(state, f.stats());
  speedup(state, "branch/" + std::to_string(q), ns, false);
}

// ---- a read waits only for its value's ancestors ----------------------------------------
// research 150 ms and classify 10 ms start together; the read of classify's result waits
// 10 ms, not for research, so tool (60 ms) runs beside research and combine (10 ms) starts at
// 150 ms: 160 ms jitted, 150 + 10 + 60 + 10 = 230 ms direct.

auto research = xcs::op(
    "research",
    [](int q) {
      nap_ms(150);
      return q * 2;
    },
    xcs::blocking);
auto classify = xcs::op(
    "classify",
    [](int q) {
      nap_ms(10);
      return q > 0 ? 1 : 0;
    },
    xcs::blocking);
auto tool = xcs::op(
    "tool",
    [](int q) {
      nap_ms(60);
      return q + 100;
    },
    xcs::blocking);
auto combine = xcs::op(
    "combine",
    [](int a, int b) {
      nap_ms(10);
      return a + b;
    },
    xcs::blocking);

auto ancestors_body = [](auto q) {
  auto r = research(q);
  auto c = classify(q);
  if (c > 0) return combine(tool(q), r);
  return combine(q, r);
};

constexpr int kAncestorsQ = 1;  // classify(1) > 0: the tool branch

void BM_Direct_ReadWaitsOnlyForAncestors(benchmark::State& state) {
  state.counters["expected_ms"] = 230;
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(ancestors_body(kAncestorsQ)); });
  speedup(state, "ancestors", ns, true);
}

void BM_Jit_ReadWaitsOnlyForAncestors(benchmark::State& state) {
  state.counters["expected_ms"] = 160;
  auto f = xcs::jit(ancestors_body);
  if (!same_result(state, f, ancestors_body, kAncestorsQ)) return;
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(kAncestorsQ)); });
  staged_counters(state, f.stats());
  speedup(state, "ancestors", ns, false);
}

// ---- staged overhead on trivial ops -------------------------------------------------------
// 1,000 trivial ops (x + 1) in 10 segments: each segment is 100 independent ops on the running
// value, summed with `+`, then read by an `if` on the partial sum (10 reads per call). Every
// read waits for its whole segment, so this measures what staging costs per op, not overlap.
// ns_per_op is the call's time over the 1,000 ops (the 990 `+` and the reads ride along).

constexpr int kSegments = 10;
constexpr int kPerSegment = 100;
constexpr int kTrivialOps = kSegments * kPerSegment;

auto inc = xcs::op("inc", [](int v) { return v + 1; });

/// `segments` segments of kPerSegment trivial ops, each segment summed and read by an `if`.
auto segmented_body(int segments) {
  return [segments](auto x) {
    auto acc = x;
    for (int s = 0; s < segments; ++s) {
      auto sum = inc(acc);
      for (int i = 1; i < kPerSegment; ++i) sum = sum + inc(acc);
      if (sum > 1'000'000) sum = sum % 1000;  // the read; keeps the sum from overflowing
      acc = sum;
    }
    return acc;
  };
}

const auto trivial_body = segmented_body(kSegments);

void trivial_counters(benchmark::State& state, double ns) {
  state.counters["ops"] = kTrivialOps;
  state.counters["ns_per_op"] = ns / kTrivialOps;
}

void BM_Direct_StagedTrivialOps(benchmark::State& state) {
  double ns = run_loop(state, [] { benchmark::DoNotOptimize(trivial_body(1)); });
  trivial_counters(state, ns);
  speedup(state, "trivial", ns, true);
}

void BM_Jit_StagedTrivialOps(benchmark::State& state) {
  auto f = xcs::jit(trivial_body);
  if (!same_result(state, f, trivial_body, 1)) return;
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  trivial_counters(state, ns);
  staged_counters(state, f.stats());
  speedup(state, "trivial", ns, false);
  // Target: at most 500 ns per op over the direct call, timed here in the same run.
  double direct = mean_call_ns([] { benchmark::DoNotOptimize(trivial_body(1)); });
  state.counters["direct_ns_per_op"] = direct / kTrivialOps;
  state.counters["overhead_ns_per_op"] = (ns - direct) / kTrivialOps;
  state.counters["target_overhead_ns_per_op"] = 500;
}

// ---- staged cost is linear in the number of ops ------------------------------------------
// The same body at 1,000 and 100,000 trivial ops, one read per 100 ops. Target: ns_per_op at
// 100,000 ops at most 1.2 x ns_per_op at 1,000 (the 100,000 run reports the ratio as
// vs_1000_ops when the 1,000 run came first in the process).

void BM_Direct_StagedScaling(benchmark::State& state) {
  const auto ops = state.range(0);
  auto body = segmented_body(static_cast<int>(ops / kPerSegment));
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(body(1)); });
  state.counters["ops"] = static_cast<double>(ops);
  state.counters["ns_per_op"] = ns / static_cast<double>(ops);
}

void BM_Jit_StagedScaling(benchmark::State& state) {
  const auto ops = state.range(0);
  auto body = segmented_body(static_cast<int>(ops / kPerSegment));
  auto f = xcs::jit(body);
  if (!same_result(state, f, body, 1)) return;
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  const double per_op = ns / static_cast<double>(ops);
  state.counters["ops"] = static_cast<double>(ops);
  state.counters["ns_per_op"] = per_op;
  staged_counters(state, f.stats());
  serial_times()["scaling/" + std::to_string(ops)] = per_op;
  auto base = serial_times().find("scaling/1000");
  if (ops != 1000 && base != serial_times().end() && base->second > 0) {
    state.counters["vs_1000_ops"] = per_op / base->second;
    state.counters["target_vs_1000_ops"] = 1.2;
  }
}

// ---- a staged call of four trivial ops and one read ---------------------------------------
// inc(a), inc(b), their comparison (an operator node) and one add, chosen by an `if` on the
// comparison: about the least a staged call does. Target: at most 1 us per call. Calls
// alternate between the two branches.

auto add = xcs::op("add", [](int a, int b) { return a + b; });

auto branchy_body = [](auto a, auto b) {
  auto x = inc(a);
  auto y = inc(b);
  if (x < y) {
    return add(x, y);
  } else {
    return add(y, x);
  }
};

/// Calls `f` on (1, 2) or (2, 1) by the parity of `i`, hiding the arguments from the optimizer.
template <class F>
void call_branchy(const F& f, int i) {
  int a = 1 + (i & 1), b = 2 - (i & 1);
  benchmark::DoNotOptimize(a);
  benchmark::DoNotOptimize(b);
  benchmark::DoNotOptimize(f(a, b));
}

void BM_Direct_StagedBranchyTrivial(benchmark::State& state) {
  int i = 0;
  double ns = run_loop(state, [&] { call_branchy(branchy_body, ++i); });
  speedup(state, "branchy", ns, true);
}

void BM_Jit_StagedBranchyTrivial(benchmark::State& state) {
  auto f = xcs::jit(branchy_body);
  if (!same_result(state, f, branchy_body, 1, 2) || !same_result(state, f, branchy_body, 2, 1)) {
    return;
  }
  int i = 0;
  double ns = run_loop(state, [&] { call_branchy(f, ++i); });
  staged_counters(state, f.stats());
  speedup(state, "branchy", ns, false);
  double direct = mean_call_ns([&] { call_branchy(branchy_body, ++i); });
  state.counters["direct_ns"] = direct;
  state.counters["overhead_ns"] = ns - direct;
  state.counters["target_ns"] = 1000;
}

// ---- nested branchy calls -----------------------------------------------------------------
// An inner jitted function that reads: a 40 ms op, an `if` on its result, another 40 ms op
// (80 ms). The outer body calls it `calls` times with traced values on independent inputs and
// adds the results. The inner calls do not depend on each other, so two could take the time
// of one. Target: two calls at most 1.1 x one call + 2 ms (target_ms and vs_one_call, reported
// by /2 when /1 ran first in the process). Direct: 80 ms per call.

auto fetch = xcs::op(
    "fetch",
    [](int q) {
      nap_ms(kBranchOpMs);
      return q * 3;
    },
    xcs::blocking);
auto refine = xcs::op(
    "refine",
    [](int v) {
      nap_ms(kBranchOpMs);
      return v + 1;
    },
    xcs::blocking);

auto inner_branchy_body = [](auto q) {
  auto v = fetch(q);
  if (v % 2 == 0) return refine(v);
  return refine(v + 1);
};
auto inner_branchy = xcs::jit(inner_branchy_body);

/// The outer body: `calls` calls of `inner` (the jitted function, or its body for the direct
/// call) on q, q + 1, ..., summed.
template <class Inner>
auto nested_branchy_body(Inner inner, int calls) {
  return [inner, calls](auto q) {
    auto total = inner(q);
    for (int i = 1; i < calls; ++i) total = total + inner(q + i);
    return total;
  };
}

void BM_Direct_NestedBranchy(benchmark::State& state) {
  const int calls = static_cast<int>(state.range(0));
  auto body = nested_branchy_body(inner_branchy_body, calls);
  state.counters["expected_ms"] = 2 * kBranchOpMs * calls;
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(body(1)); });
  speedup(state, "nested_branchy/" + std::to_string(calls), ns, true);
}

void BM_Jit_NestedBranchy(benchmark::State& state) {
  const int calls = static_cast<int>(state.range(0));
  auto f = xcs::jit(nested_branchy_body(inner_branchy, calls));
  if (!same_result(state, f, nested_branchy_body(inner_branchy_body, calls), 1)) return;
  state.counters["expected_ms"] = 2 * kBranchOpMs;
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  staged_counters(state, f.stats());
  speedup(state, "nested_branchy/" + std::to_string(calls), ns, false);
  if (calls == 1) serial_times()["nested_branchy_jit/1"] = ns;
  auto one = serial_times().find("nested_branchy_jit/1");
  if (calls == 2 && one != serial_times().end() && one->second > 0) {
    state.counters["vs_one_call"] = ns / one->second;
    state.counters["target_ms"] = (1.1 * one->second + 2e6) / 1e6;
  }
}

// ---- memory over many staged calls --------------------------------------------------------
// 20,000 staged calls of a small branchy body (a loop whose trip count is read, a branch, an
// exception caught in the body every 10th call): resident memory after 2,000 calls (warm-up)
// and after all of them. Target: flat (growth within allocator noise, well under 1 MiB).

auto half = xcs::op("half", [](int v) { return v / 2; });
auto check = xcs::op("check", [](int v) {
  if (v % 10 == 3) throw std::runtime_error("odd one");
  return v;
});

auto memory_body = [](auto x) {
  auto v = inc(x);
  while (v > 1) v = half(v);  // reads: the trip count depends on x
  int r = 0;
  try {
    r = check(x) > 0 ? 1 : 0;  // throws for x % 10 == 3, caught here as directly
  } catch (const std::runtime_error&) {
    r = -1;
  }
  return v + r;
};

void BM_Jit_StagedMemory(benchmark::State& state) {
  constexpr int kCalls = 20'000, kWarmup = 2'000;
  auto f = xcs::jit(memory_body);
  for (int x = 0; x < 16; ++x) {
    if (f(x) != memory_body(x)) {
      state.SkipWithError("the jitted call differs from the direct call");
      return;
    }
  }
  double warm_mib = 0, end_mib = 0;
  for (auto _ : state) {
    for (int i = 0; i < kCalls; ++i) {
      benchmark::DoNotOptimize(f(i % 64));
      if (i + 1 == kWarmup) warm_mib = rss_mib();
    }
    end_mib = rss_mib();
  }
  xcs::stats s = f.stats();
  state.counters["calls"] = kCalls;
  state.counters["staged_calls"] = static_cast<double>(s.staged_calls);
  state.counters["rss_after_warmup_mib"] = warm_mib;
  state.counters["rss_end_mib"] = end_mib;
  state.counters["rss_growth_kib"] = (end_mib - warm_mib) * 1024.0;
}

// Each baseline runs just before its jitted twin, which reports its speedup against it.
BENCHMARK(BM_Direct_StagedBranch)
    ->ArgName("q")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK(BM_Jit_StagedBranch)
    ->ArgName("q")
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK(BM_Direct_ReadWaitsOnlyForAncestors)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK(BM_Jit_ReadWaitsOnlyForAncestors)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK(BM_Direct_StagedTrivialOps)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Jit_StagedTrivialOps)->UseRealTime()->Unit(benchmark::kMicrosecond)->MinTime(0.5);
BENCHMARK(BM_Direct_StagedScaling)
    ->ArgName("ops")
    ->Arg(1000)
    ->Arg(100'000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Jit_StagedScaling)
    ->ArgName("ops")
    ->Arg(1000)
    ->Arg(100'000)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond)
    ->MinTime(0.5);
BENCHMARK(BM_Direct_StagedBranchyTrivial)->UseRealTime();
BENCHMARK(BM_Jit_StagedBranchyTrivial)->UseRealTime()->MinTime(0.5);
BENCHMARK(BM_Direct_NestedBranchy)
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK(BM_Jit_NestedBranchy)
    ->Arg(1)
    ->Arg(2)
    ->UseRealTime()
    ->Unit(benchmark::kMillisecond)
    ->Iterations(3);
BENCHMARK(BM_Jit_StagedMemory)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
