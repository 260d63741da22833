// SPDX-License-Identifier: MIT
// Ensemble: N model calls on one question feed a judge, whose verdict feeds a synthesis.
//   ensemble          runs it directly and jitted, and checks that the results agree
//   ensemble --dot    prints only the Graphviz DOT of its graph (for `dot -Tsvg`)
#include <fmt/format.h>
#include <xcs/xcs.hpp>

#include <array>
#include <chrono>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

namespace {

constexpr int kModels = 4;

void pretend_network(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

// Each op only reads its arguments: several instances may run at once on different threads.
auto ask = xcs::op("ask", [](const std::string& question, int model) {
  pretend_network(40);
  return fmt::format("model {} says {} chars", model, question.size() + model);
});
auto judge = xcs::op("judge", [](const std::vector<std::string>& answers) {
  pretend_network(20);
  std::size_t best = 0;
  for (std::size_t i = 1; i < answers.size(); ++i) {
    if (answers[i].size() > answers[best].size()) best = i;
  }
  return static_cast<int>(best);
});
auto synthesize = xcs::op("synthesize", [](const std::string& question, int verdict) {
  pretend_network(20);
  return fmt::format("answer to '{}' follows model {}", question, verdict);
});

// The graph, one row per parallel group:
//   ask(q, 0)  ask(q, 1)  ask(q, 2)  ask(q, 3)   independent: they run at the same time
//   pack                                         the four answers as one std::vector
//   judge                                        the index of the best answer
//   synthesize(q, verdict)
constexpr std::array<int, kModels> kModelIds{0, 1, 2, 3};

auto body = [](const auto& question) {
  // One ask per model; each model number is a plain constant of its node.
  auto answers = xcs::map([&](int m) { return ask(question, m); }, kModelIds);
  // While tracing, answers is a std::vector<xcs::traced<std::string>>: passed to an op it
  // becomes one value of type std::vector<std::string>.
  auto verdict = judge(answers);
  return std::make_tuple(answers, synthesize(question, verdict));
};

template <class Fn>
double millis(Fn&& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  auto ensemble = xcs::jit(body);
  if (argc > 1 && std::string_view(argv[1]) == "--dot") {
    fmt::print("{}", ensemble.dot(std::string("question")));
    return 0;
  }
  int failures = 0;

  for (std::string question : {"why is the sky blue?", "what is a monad?", "why?"}) {
    std::tuple<std::vector<std::string>, std::string> direct, jitted;
    double direct_ms = millis([&] { direct = body(question); });
    double jitted_ms = millis([&] { jitted = ensemble(question); });
    bool same = direct == jitted;
    failures += same ? 0 : 1;
    fmt::print("{:<22} direct {:6.1f} ms, jitted {:6.1f} ms, same result: {}\n  {}\n", question,
               direct_ms, jitted_ms, same ? "yes" : "NO", std::get<1>(jitted));
  }

  xcs::stats s = ensemble.stats();
  fmt::print("{}\n", s);
  // One trace for all three questions (values are not part of the cache key); the widest
  // group holds the four asks.
  if (s.traces != 1 || s.fallback_calls != 0 || s.max_parallelism != kModels) {
    fmt::print(stderr, "unexpected stats: traces={} fallback_calls={} max_parallelism={}\n",
               s.traces, s.fallback_calls, s.max_parallelism);
    ++failures;
  }
  return failures == 0 ? 0 : 1;
}
