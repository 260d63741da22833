// SPDX-License-Identifier: MIT
// fork(): a child of a process whose pool is busy gets a fresh pool, lane and monitor.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xcs/xcs.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <thread>
#include <vector>

#include "test_support.hpp"

namespace {

using xcs_test::sleep_ms;
using xcs_test::spin_ms;
using steady = std::chrono::steady_clock;

/// Exit codes of the child.
enum child_status : int {
  ok = 0,
  wrong_result = 20,
  ops_did_not_overlap = 21,
  too_slow = 22,
  parent_pool_seen = 23,
};

/// In the child: two 40 ms blocking ops and two 20 ms CPU ops, all four started together.
int run_in_child() {
  alarm(20);  // a pool that was not re-created would hang: die instead
  if (xcs::pool_started()) return parent_pool_seen;
  std::array<std::atomic<std::int64_t>, 4> started{};
  auto stamp = [&](int i) {
    started[i] =
        std::chrono::duration_cast<std::chrono::microseconds>(steady::now().time_since_epoch())
            .count();
  };
  auto wait_op = xcs::op(
      "child_wait",
      [&](int i) {
        stamp(i);
        sleep_ms(40);
        return i;
      },
      xcs::blocking);
  auto cpu_op = xcs::op("child_cpu", [&](int i) {
    stamp(i);
    spin_ms(20);
    return i;
  });
  auto f =
      xcs::jit([&](auto a) { return wait_op(a) + wait_op(a + 1) + cpu_op(a + 2) + cpu_op(a + 3); });
  auto t0 = steady::now();
  int sum = f(0);
  double ms = xcs_test::ms_since(t0);
  if (sum != 0 + 1 + 2 + 3) return wrong_result;
  // Each pair overlaps: the CPU ops ran on the caller and a worker of the child's new pool
  // (with the parent's pool they would run one after the other), the blocking ops on two
  // threads of its new lane. With one worker, the blocking ops may wait for a thread to take
  // them until the CPU ops are done: about 60 ms in all.
  // Two instances overlapped if the second started before the first could have ended: start
  // times closer than the op's own duration (40 ms blocking, 20 ms CPU), in microseconds.
  auto apart = [&](int a, int b) { return std::abs(started[a].load() - started[b].load()); };
  if (apart(0, 1) >= 40'000 || apart(2, 3) >= 20'000) {
    for (auto& st : started) {
      std::fprintf(stderr, "child: op started at %lld us\n", static_cast<long long>(st.load()));
    }
    return ops_did_not_overlap;
  }
  if (ms > 500) return too_slow;
  return ok;
}

TEST(ForkTest, ChildGetsAFreshPoolWhileParentThreadsRunPlans) {
#if defined(__SANITIZE_THREAD__) || defined(XCS_SANITIZE_THREAD)
  GTEST_SKIP() << "TSan does not support threads in a child of a multithreaded process";
#endif
  auto fetch = xcs::op(
      "parent_fetch",
      [](int v) {
        sleep_ms(2);
        return v;
      },
      xcs::blocking);
  auto crunch = xcs::op("parent_crunch", [](int v) {
    spin_ms(1);
    return v * 2;
  });
  auto f = xcs::jit([&](auto a) { return fetch(a) + fetch(a + 1) + crunch(a) + crunch(a + 1); });
  // The parent's callers must keep finishing calls before and after the fork; if they stop
  // (a pool the fork broke), the waits below would never end: fail with a message instead.
  xcs_test::deadline guard(std::chrono::seconds(60), "ForkTest: the parent's calls stopped");
  std::atomic<bool> stop{false};
  std::atomic<int> calls{0}, wrong{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 3; ++t) {
    callers.emplace_back([&, t] {
      while (!stop.load()) {
        if (f(t) != t + (t + 1) + 2 * t + 2 * (t + 1)) wrong.fetch_add(1);
        calls.fetch_add(1);
      }
    });
  }
  while (calls.load() < 20) std::this_thread::sleep_for(std::chrono::milliseconds(1));

  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) _exit(run_in_child());
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);

  int before = calls.load();
  while (calls.load() < before + 20) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  stop = true;
  for (auto& t : callers) t.join();
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_EQ(f(5), 5 + 6 + 10 + 12);

  ASSERT_TRUE(WIFEXITED(status)) << "the child died (signal " << WTERMSIG(status)
                                 << "; SIGALRM means it hung)";
  EXPECT_EQ(WEXITSTATUS(status), ok)
      << "20: wrong result, 21: ops did not overlap, 22: slow, 23: the parent's pool";
}

}  // namespace
