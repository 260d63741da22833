// SPDX-License-Identifier: MIT
// Seeing inside: explain() and dot() for a plan, a staged signature, and the reason for a retrace.
//   explain          prints everything below
//   explain --dot    prints only the Graphviz DOT of the first pipeline (for `dot -Tsvg`)
#include <fmt/format.h>
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

namespace {

std::atomic<int> g_op_runs{0};  // how many op bodies ran, to show that explain() runs none

auto fetch = xcs::op(
    "fetch",
    [](const std::string& url) {
      ++g_op_runs;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
      return "<page " + url + ">";
    },
    xcs::blocking);  // a hint: it waits on I/O, so it goes to the blocking lane at once
auto summarize = xcs::op("summarize", [](const std::string& page) {
  ++g_op_runs;
  return "summary of " + page;
});
auto score = xcs::op("score", [](const std::string& a, const std::string& b) {
  ++g_op_runs;
  return static_cast<double>(a.size()) / static_cast<double>(a.size() + b.size());
});

// A diamond: two fetch -> summarize chains, joined by score.
auto compare_body = [](const auto& url_a, const auto& url_b) {
  auto a = summarize(fetch(url_a));
  auto b = summarize(fetch(url_b));
  return std::make_tuple(a, b, score(a, b));
};

// Reads the value of a traced double in an `if`: the signature runs staged. The body runs on
// every call, and the `if` waits for score (and only for what score depends on).
auto branchy_body = [](const auto& url_a, const auto& url_b) {
  auto a = summarize(fetch(url_a));
  auto b = summarize(fetch(url_b));
  if (score(a, b) > 0.5) return a;
  return b;
};

// Fetches the pages of a list of URLs; the list's size is part of the cache key.
auto total_body = [](const auto& urls) { return xcs::map(fetch, urls); };

}  // namespace

int main(int argc, char** argv) {
  auto compare = xcs::jit(compare_body);
  std::string a = "example.com/a", b = "example.com/b";

  if (argc > 1 && std::string_view(argv[1]) == "--dot") {
    fmt::print("{}", compare.dot(a, b));
    return 0;
  }
  int failures = 0;
  auto expect = [&](bool ok, std::string_view what) {
    if (!ok) {
      fmt::print(stderr, "FAILED: {}\n", what);
      ++failures;
    }
  };

  fmt::print("==== compare.explain(a, b), before the first call\n{}\n", compare.explain(a, b));
  fmt::print("==== compare.dot(a, b)\n{}\n", compare.dot(a, b));
  expect(g_op_runs.load() == 0, "explain() and dot() run no op");
  expect(compare.stats().traces == 0, "explain() and dot() leave the cache alone");

  expect(compare(a, b) == compare_body(a, b), "compare(a, b) equals the direct call");
  std::string cached = compare.explain(a, b);
  fmt::print("==== compare.explain(a, b), after the first call\n{}\n", cached);
  expect(cached.find("cached: yes") != std::string::npos, "explain() says the plan is cached");

  // A branch on an op's result: the signature runs staged. explain() shows the graph up to the
  // read and names it; the stats keep the same reason after a call.
  auto branchy = xcs::jit(branchy_body);
  const int runs_before = g_op_runs.load();
  std::string why = branchy.explain(a, b);
  fmt::print("==== branchy.explain(a, b)\n{}\n", why);
  expect(why.find("staged") != std::string::npos, "explain() reports the staged signature");
  expect(g_op_runs.load() == runs_before, "explain() of a staged signature runs no op");
  expect(branchy(a, b) == branchy_body(a, b), "a staged call equals the direct call");
  fmt::print("==== branchy.stats().staged_reason\n{}\n\n", branchy.stats().staged_reason);
  expect(!branchy.stats().staged_reason.empty(), "stats() keeps the staged reason");
  expect(branchy.stats().staged_calls == 1, "the call ran staged");

  // A retrace: the same function called with a list of another size.
  auto total = xcs::jit(total_body);
  std::vector<std::string> three = {"u1", "u2", "u3"}, four = {"u1", "u2", "u3", "u4"};
  expect(total(three) == total_body(three), "total(three) equals the direct call");
  expect(total(four) == total_body(four), "total(four) equals the direct call");
  xcs::stats s = total.stats();
  fmt::print("==== total.stats() after calls with 3 and then 4 URLs\n{}\n", s);
  expect(s.traces == 2 && s.retraces == 1, "one trace per list size, the second a retrace");
  expect(!s.retrace_reason.empty(), "stats() says why it retraced");

  return failures == 0 ? 0 : 1;
}
