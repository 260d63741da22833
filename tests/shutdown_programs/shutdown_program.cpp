// SPDX-License-Identifier: MIT
// Makes jitted calls, then ends the process in the way argv[1] names; run by shutdown_test.
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

auto square = xcs::op("square", [](int x) { return x * x; });
auto add = xcs::op("add", [](int a, int b) { return a + b; });
std::atomic<bool> g_blocked{false};
/// Never returns: sleeps in a loop (a waiting op, on the blocking lane).
auto never = xcs::op(
    "never",
    [](int x) {
      g_blocked = true;
      for (;;) std::this_thread::sleep_for(std::chrono::milliseconds(10));
      return x;
    },
    xcs::blocking);

auto body = [](const auto& v) {
  std::vector<std::decay_t<decltype(square(v[0]))>> parts;
  for (const auto& e : v) parts.push_back(square(e));
  return add(add(parts[0], parts[1]), add(parts[2], parts[3]));
};

/// Some jitted calls that use the pool; false if a result is wrong.
bool make_calls() {
  auto f = xcs::jit(body);
  for (int i = 0; i < 100; ++i) {
    std::vector<int> v{i, i + 1, i + 2, i + 3};
    if (f(v) != i * i + (i + 1) * (i + 1) + (i + 2) * (i + 2) + (i + 3) * (i + 3)) return false;
  }
  return xcs::pool_started();
}

/// Starts a call whose op never returns, on a thread of its own, and waits until the op runs.
void start_blocked_call() {
  static auto g = xcs::jit([](const auto& x) { return std::make_pair(never(x), square(x)); });
  std::thread([] { (void)g(3); }).detach();
  while (!g_blocked) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

/// Keeps calling a jitted function (never destroyed) on a thread of its own.
void start_busy_caller() {
  static std::atomic<int> calls{0};
  std::thread([] {
    auto* f = new auto(xcs::jit(body));
    for (int i = 0;; ++i) {
      std::vector<int> v{i % 7, 1, 2, 3};
      (void)(*f)(v);
      ++calls;
    }
  }).detach();
  while (calls < 10) std::this_thread::sleep_for(std::chrono::milliseconds(1));
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = argc > 1 ? argv[1] : "";
  std::string how = argc > 2 ? argv[2] : "return";
  if (!make_calls()) {
    std::puts("wrong result");
    return 2;
  }
  if (mode == "idle") {
    // Long enough for the workers to sleep and the monitor to go quiet (200 ms).
    std::this_thread::sleep_for(std::chrono::milliseconds(400));
  } else if (mode == "blocked") {
    start_blocked_call();
  } else if (mode == "busy") {
    start_busy_caller();
  } else if (mode != "calls") {
    std::printf("unknown mode '%s'\n", mode.c_str());
    return 2;
  }
  std::puts("ok");
  std::fflush(stdout);
  if (how == "exit") std::exit(0);
  return 0;
}
