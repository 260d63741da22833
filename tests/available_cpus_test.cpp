// SPDX-License-Identifier: MIT
// xcs::available_cpus(): the CPUs the process may use, and the default pool size it gives.
#include <gtest/gtest.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xcs/xcs.hpp>

#include <cstdlib>
#include <thread>

namespace {

TEST(AvailableCpusTest, AtLeastOneAndNoMoreThanTheAffinityMask) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  unsigned n = xcs::available_cpus();
  EXPECT_GE(n, 1u);
  EXPECT_LE(n, static_cast<unsigned>(CPU_COUNT(&set)));
}

// As `taskset -c <one cpu>` would: a child restricted to one CPU sees one, and its default
// pool is one worker (the caller takes part too).
TEST(AvailableCpusTest, OneCpuInTheAffinityMaskGivesOneAndOneWorker) {
  cpu_set_t set;
  CPU_ZERO(&set);
  ASSERT_EQ(sched_getaffinity(0, sizeof set, &set), 0);
  int first = 0;
  while (!CPU_ISSET(first, &set)) ++first;
  pid_t child = fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(first, &one);
    if (sched_setaffinity(0, sizeof one, &one) != 0) _exit(10);
    unsetenv("XCS_THREADS");
    if (xcs::available_cpus() != 1) _exit(11);
    if (xcs::pool_started() || xcs::thread_count() != 1) _exit(12);
    _exit(0);
  }
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0) << "10: setaffinity failed, 11: available_cpus() != 1, "
                                       "12: default thread_count() != 1";
}

}  // namespace
