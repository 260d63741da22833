// SPDX-License-Identifier: MIT
// An agent loop with a critic: draft answers from several tools at once, let a critic score
// the best draft, and revise until the critic is satisfied. The loop's condition reads an op's
// result, so the call runs staged: each read waits only for the ops its value depends on, and
// everything else keeps running.
//   agent_loop        runs it directly and jitted, checks that the results agree, prints stats
#include <fmt/format.h>
#include <xcs/xcs.hpp>

#include <array>
#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

namespace {

void pretend_network(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

auto research = xcs::op("research", [](const std::string& task, int tool) {
  pretend_network(40);
  return fmt::format("[tool {} on '{}']", tool, task);
});
auto draft = xcs::op("draft", [](const std::vector<std::string>& notes, int round) {
  pretend_network(30);
  std::string d = fmt::format("draft {} from {} notes", round, notes.size());
  for (const auto& n : notes) d += " " + n;
  return d;
});
// The critic's score grows with the round: 3, 5, 7, ...; 7 or more is good enough.
auto critic = xcs::op("critic", [](const std::string& d) {
  pretend_network(20);
  return 1 + 2 * static_cast<int>(d[6] - '0');
});
auto polish = xcs::op("polish", [](const std::string& d, int score) {
  pretend_network(20);
  return fmt::format("{} (score {})", d, score);
});
// Independent of the loop: runs while the agent iterates.
auto cite = xcs::op("cite", [](const std::string& task) {
  pretend_network(60);
  return fmt::format("sources for '{}'", task);
});

constexpr std::array<int, 3> kTools{0, 1, 2};

// Plain sequential code: a loop on the critic's verdict. Under xcs::jit the three research
// calls and `cite` run at once; each round's critic read waits only for that round's draft.
auto agent = [](const auto& task) {
  auto sources = cite(task);
  auto notes = xcs::map([&](int t) { return research(task, t); }, kTools);
  int round = 1;
  auto d = draft(notes, round);
  auto score = critic(d);
  while (score < 7) {  // a read: waits for this round's critic, not for `cite`
    d = draft(notes, ++round);
    score = critic(d);
  }
  return std::make_pair(polish(d, score), sources);
};

template <class Fn>
double millis(Fn&& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main() {
  const std::string task = "compare two databases";
  std::pair<std::string, std::string> direct, jitted;
  double direct_ms = millis([&] { direct = agent(task); });

  auto fast = xcs::jit(agent);
  double first_ms = millis([&] { jitted = fast(task); });
  if (jitted != direct) {
    std::fprintf(stderr, "mismatch:\n  direct: %s\n  jitted: %s\n", direct.first.c_str(),
                 jitted.first.c_str());
    return 1;
  }
  double second_ms = millis([&] { jitted = fast(task); });
  if (jitted != direct) return 1;

  fmt::print("{}\n{}\n\n", jitted.first, jitted.second);
  fmt::print("direct {:.0f} ms, jitted {:.0f} ms (first call), {:.0f} ms (second)\n", direct_ms,
             first_ms, second_ms);
  // Direct: 60 (cite) + 3 x 40 (research) + 3 rounds x (30 + 20) + 20 = 350 ms.
  // Staged: max(60, 40 + 150) + 20 = 210 ms: the research calls overlap, cite runs meanwhile.
  xcs::stats s = fast.stats();
  fmt::print("{}\n", s);
  return s.staged_calls == 2 && s.fallback_calls == 0 ? 0 : 1;
}
