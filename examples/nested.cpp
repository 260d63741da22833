// SPDX-License-Identifier: MIT
// Nested jit: a jitted function called inside another one's body, and from inside an op.
#include <fmt/format.h>
#include <xcs/xcs.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <thread>
#include <tuple>

namespace {

void pretend_network(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

auto summarize = xcs::op("summarize", [](const std::string& doc) {
  pretend_network(30);
  return "summary of " + doc;
});
auto keywords = xcs::op("keywords", [](const std::string& doc) {
  pretend_network(30);
  return "keywords of " + doc;
});
auto combine = xcs::op("combine", [](const std::string& summary, const std::string& words) {
  return summary + " / " + words;
});

// Inner function: two independent ops and a combine (3 nodes).
auto analyze_body = [](const auto& doc) { return combine(summarize(doc), keywords(doc)); };
// Copies of a jitted function share its plan cache, so capturing it by value is cheap.
auto analyze = xcs::jit(analyze_body);

// 1. Called with traced values, `analyze` does not trace on its own: its body records into the
//    outer trace, so the outer plan holds 2 x 3 nodes plus the merge, and runs all four
//    summarize/keywords ops at once.
auto compare_body = [](const auto& a, const auto& b) { return analyze(a) + " | " + analyze(b); };

// 2. Called with plain values from inside an op, `analyze` runs its own plan on whatever thread
//    runs the op (a worker or the blocking lane): that thread runs nodes too, so nothing
//    waits for a free worker.
auto analyze_op = xcs::op("analyze", [](const std::string& doc) { return analyze(doc); });
auto fan_out_body = [](const auto& a, const auto& b, const auto& c) {
  return std::make_tuple(analyze_op(a), analyze_op(b), analyze_op(c));
};

}  // namespace

int main() {
  auto compare = xcs::jit(compare_body);
  auto fan_out = xcs::jit(fan_out_body);
  int failures = 0;
  auto check = [&](const char* what, bool same) {
    fmt::print("{}: same result as the direct call: {}\n", what, same ? "yes" : "NO");
    failures += same ? 0 : 1;
  };

  std::string x = "doc x", y = "doc y", z = "doc z";
  check("compare(x, y)", compare(x, y) == compare_body(x, y));
  check("fan_out(x, y, z)", fan_out(x, y, z) == fan_out_body(x, y, z));

  // Plain calls of analyze: none from the jitted compare (its trace inlined analyze's body),
  // one per analyze_op node from the jitted fan_out.
  std::uint64_t before = analyze.stats().calls;
  (void)compare(x, y);
  std::uint64_t after_compare = analyze.stats().calls;
  (void)fan_out(x, y, z);
  std::uint64_t after_fan_out = analyze.stats().calls;
  if (after_compare != before || after_fan_out != before + 3) {
    fmt::print(stderr, "unexpected analyze call counts: {} -> {} -> {}\n", before, after_compare,
               after_fan_out);
    ++failures;
  }

  fmt::print("\ncompare.explain(x, y):\n{}\n", compare.explain(x, y));

  xcs::stats outer = compare.stats();
  xcs::stats inner = analyze.stats();
  fmt::print("compare: {}\n\nanalyze: {}\n", outer, inner);
  // compare inlined analyze: 3 + 3 nodes for the two analyses, plus two '+' for the result.
  if (outer.nodes != 8 || outer.max_parallelism < 4 || outer.fallback_calls != 0) {
    fmt::print(stderr, "unexpected compare stats: nodes={} max_parallelism={}\n", outer.nodes,
               outer.max_parallelism);
    ++failures;
  }
  // analyze traced once, for its own plain calls; the inlined calls never reached its cache.
  if (inner.traces != 1 || inner.fallback_calls != 0 || !inner.optimized) {
    fmt::print(stderr, "unexpected analyze stats: traces={} fallback_calls={}\n", inner.traces,
               inner.fallback_calls);
    ++failures;
  }
  return failures == 0 ? 0 : 1;
}
