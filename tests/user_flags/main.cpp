// SPDX-License-Identifier: MIT
// A user's program built with the user's own sanitizer flags (scripts/check-user-flags.sh):
// plans, staged reads, fallbacks, retraces at the cache bound, nested calls whose waits
// suspend fibers, blocking ops, exceptions, from several threads. Exits 0 when every result
// matches the direct call; any sanitizer report ends it first (halt_on_error).
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

int g_failures = 0;

void check(bool ok, const char* what) {
  if (ok) return;
  std::fprintf(stderr, "user_flags: FAILED: %s\n", what);
  ++g_failures;
}

auto twice = xcs::op("twice", [](int x) { return 2 * x; });
auto add = xcs::op("add", [](int a, int b) { return a + b; });
auto name_of = xcs::op("name_of", [](int x) { return "n" + std::to_string(x); });
auto fetch = xcs::op(
    "fetch",
    [](int x) {
      std::this_thread::sleep_for(std::chrono::milliseconds(2));
      return x + 1;
    },
    xcs::blocking);
auto checked = xcs::op("checked", [](int x) {
  if (x < 0) throw std::invalid_argument("negative " + std::to_string(x));
  return x;
});

/// A plan: independent ops, a string result, a vector of traced values.
auto plan_body = [](const auto& a, const auto& b) {
  auto x = twice(a), y = twice(b);
  std::vector<decltype(x)> parts{x, y, add(x, y)};
  return std::make_pair(add(parts[0], parts[2]), name_of(y));
};

/// Staged: the body branches on an op's result.
auto staged_body = [](const auto& a) {
  auto x = fetch(a);
  if (x > 10) return add(twice(x), fetch(x));
  return twice(x);
};

/// Nested: each op calls a jitted function whose blocking ops leave its owner waiting (on a
/// CPU worker, by suspending its fiber).
auto inner = xcs::jit([](const auto& a) { return add(fetch(a), fetch(a)); });
auto call_inner = xcs::op("call_inner", [](int x) { return inner(x); });
auto nested_body = [](const auto& a) {
  return add(add(call_inner(a), call_inner(a)), add(call_inner(a), call_inner(a)));
};

void run(int seed) {
  auto planned = xcs::jit(plan_body);
  auto staged = xcs::jit(staged_body);
  auto nested = xcs::jit(nested_body);
  auto failing = xcs::jit([](const auto& a, const auto& b) { return checked(a) + checked(b); });
  auto chain = xcs::jit([](const auto& a) { return twice(twice(a)); });  // falls back
  auto sized = xcs::jit([](const auto& v) {
    std::vector<decltype(twice(v[0]))> out;
    for (const auto& e : v) out.push_back(twice(e));
    return out;
  });
  sized.set_cache_capacity(2);
  for (int i = 0; i < 20; ++i) {
    int a = seed + i, b = i % 7;
    check(planned(a, b) == plan_body(a, b), "plan");
    check(staged(a) == staged_body(a), "staged");
    check(nested(b) == nested_body(b), "nested");
    check(chain(a) == 4 * a, "fallback");
    std::vector<int> v(static_cast<std::size_t>(1 + i % 4), a);  // 4 sizes, cache of 2
    check(sized(v) == std::vector<int>(v.size(), 2 * a), "retrace");
    try {
      failing(a, -1 - b);
      check(false, "no exception");
    } catch (const std::invalid_argument& e) {
      check(std::string(e.what()) == "negative " + std::to_string(-1 - b), "exception");
    }
  }
  check(chain.stats().fallback_calls == 20, "fallback count");
  check(sized.stats().evictions > 0, "evictions");
  check(staged.stats().staged_calls == 20, "staged count");
  check(!planned.explain(1, 2).empty(), "explain");
}

/// Nested runs whose owners wait on CPU workers, deterministically: each fetch waits until 4
/// are in flight (or gives up after 10 s), so two nested runs must overlap, and at least one of
/// them is owned by a worker, whose fiber suspends while the lane runs its fetches. (The loop in
/// run() suspends fibers only until the monitor learns that call_inner blocks, which on a
/// loaded machine can come first.) Returns the suspensions counted.
std::uint64_t suspend_fibers() {
  std::atomic<int> in_flight{0};
  std::atomic<int> peak{0};
  auto gate = xcs::op(
      "gate",
      [&](int x) {
        const int now = ++in_flight;
        for (int seen = peak.load(); seen < now && !peak.compare_exchange_weak(seen, now);) {
        }
        const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (peak.load() < 4 && std::chrono::steady_clock::now() < give_up) {
          std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
        --in_flight;
        return x;
      },
      xcs::blocking);
  auto pair = xcs::jit([&](const auto& a) { return add(gate(a), gate(a)); });
  auto call_pair = xcs::op("call_pair", [&](int x) { return pair(x); });
  auto outer = xcs::jit([&](const auto& a, const auto& b, const auto& c, const auto& d) {
    return add(add(call_pair(a), call_pair(b)), add(call_pair(c), call_pair(d)));
  });
  check(outer(1, 2, 3, 4) == 20, "nested result");
  check(peak.load() >= 4, "two nested runs did not overlap");
  return pair.stats().fiber_suspensions;
}

}  // namespace

int main() {
  const std::uint64_t suspended = suspend_fibers();
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t) threads.emplace_back([t] { run(100 * t); });
  run(1000);
  for (auto& th : threads) th.join();
  xcs::stats st = inner.stats();
  std::printf("user_flags: %s\n", xcs::to_string(st).c_str());
  std::printf("user_flags: fiber suspensions: %llu in nested runs, %llu in all\n",
              static_cast<unsigned long long>(suspended),
              static_cast<unsigned long long>(st.fiber_suspensions));
  check(suspended > 0, "no nested wait suspended a fiber");
  if (g_failures) return 1;
  std::puts("user_flags: all results match the direct calls");
  return 0;
}
