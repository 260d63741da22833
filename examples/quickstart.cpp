// SPDX-License-Identifier: MIT
// Quickstart: two independent "LLM calls" and a scorer, direct and jitted.
#include <fmt/format.h>
#include <xcs/xcs.hpp>

#include <chrono>
#include <string>
#include <thread>

namespace {

// Stand-in for a model call: 100 ms of waiting, like a network request.
std::string call_llm(const std::string& doc) {
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  return "summary of " + doc;
}
double similarity(const std::string& a, const std::string& b) {
  return static_cast<double>(a.size()) / static_cast<double>(a.size() + b.size());
}

auto summarize = xcs::op("summarize", [](const std::string& doc) { return call_llm(doc); });
auto score =
    xcs::op("score", [](const std::string& a, const std::string& b) { return similarity(a, b); });

auto body = [](auto doc_a, auto doc_b) {
  auto a = summarize(doc_a);  // independent of b
  auto b = summarize(doc_b);  // runs at the same time as a
  return std::make_tuple(a + "\n" + b, score(a, b));
};

template <class Fn>
double millis(Fn&& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main() {
  auto pipeline = xcs::jit(body);
  std::string x = "the first document", y = "the second document";

  std::tuple<std::string, double> direct, jitted;
  double direct_ms = millis([&] { direct = body(x, y); });
  double first_ms = millis([&] { jitted = pipeline(x, y); });  // traces, then runs
  double cached_ms = millis([&] { jitted = pipeline(x, y); });

  fmt::print("direct call:        {:7.1f} ms\n", direct_ms);
  fmt::print("jitted, first call: {:7.1f} ms (traces, then runs the plan)\n", first_ms);
  fmt::print("jitted, cached:     {:7.1f} ms\n", cached_ms);
  fmt::print("same result: {}\n", direct == jitted ? "yes" : "NO");
  fmt::print("{}\n", pipeline.stats());
  return direct == jitted ? 0 : 1;
}
