// SPDX-License-Identifier: MIT
// Batch map: one op call per element of a std::vector argument, all running at the same time.
#include <fmt/format.h>
#include <xcs/xcs.hpp>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

namespace {

// Stand-in for a model call: 30 ms of waiting, like a network request. It only reads its
// argument, so instances may run on several threads at once.
auto summarize = xcs::op("summarize", [](const std::string& doc) {
  std::this_thread::sleep_for(std::chrono::milliseconds(30));
  return "summary of " + doc;
});

// The same code runs directly (docs is a std::vector<std::string>) and under tracing (docs is
// a traced vector: size() is known, each element is a traced<std::string>).
auto body = [](const auto& docs) { return xcs::map(summarize, docs); };

std::vector<std::string> make_docs(std::size_t n) {
  std::vector<std::string> docs;
  for (std::size_t i = 0; i < n; ++i) docs.push_back(fmt::format("document {}", i));
  return docs;
}

template <class Fn>
double millis(Fn&& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main() {
  auto summarize_all = xcs::jit(body);
  int failures = 0;

  // Container sizes are part of the cache key: 8 documents trace once, then 4 retrace once.
  for (std::size_t n : {8u, 8u, 4u, 8u}) {
    std::vector<std::string> docs = make_docs(n);
    std::vector<std::string> direct, jitted;
    double direct_ms = millis([&] { direct = body(docs); });
    double jitted_ms = millis([&] { jitted = summarize_all(docs); });
    bool same = direct == jitted;
    failures += same ? 0 : 1;
    fmt::print("{} docs: direct {:6.1f} ms, jitted {:6.1f} ms, same result: {}\n", n, direct_ms,
               jitted_ms, same ? "yes" : "NO");
  }

  xcs::stats s = summarize_all.stats();
  fmt::print("{}\n", s);
  // Two signatures (8 and 4 documents): two traces, the second a retrace; nothing fell back.
  if (s.traces != 2 || s.retraces != 1 || s.fallback_calls != 0 || !s.optimized) {
    fmt::print(stderr, "unexpected stats: traces={} retraces={} fallback_calls={}\n", s.traces,
               s.retraces, s.fallback_calls);
    ++failures;
  }
  return failures == 0 ? 0 : 1;
}
