// SPDX-License-Identifier: MIT
// Shutdown: processes that return from main or call std::exit right after jitted calls exit
// cleanly, with the pool busy, idle, or stuck in an op that never returns.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <climits>
#include <cstring>
#include <string>
#include <vector>

namespace {

/// The helper program: its path comes from the build (tests/shutdown_programs), else it is
/// looked for beside this test's executable.
std::string helper_path() {
#ifdef XCS_SHUTDOWN_PROGRAM
  return XCS_SHUTDOWN_PROGRAM;
#else
  char buf[PATH_MAX] = {};
  ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return {};
  std::string self(buf, static_cast<std::size_t>(n));
  return self.substr(0, self.rfind('/')) + "/shutdown_programs/shutdown_program";
#endif
}

struct exit_report {
  bool timed_out = false;
  int status = 0;  // as from waitpid
  std::string output;
  double seconds = 0;
};

/// Runs the helper with `args`, killing it after `timeout_s`; collects stdout and stderr.
exit_report run_helper(const std::vector<std::string>& args, int timeout_s = 20) {
  exit_report r;
  std::string path = helper_path();
  int fds[2];
  if (pipe(fds) != 0) {
    ADD_FAILURE() << "pipe: " << std::strerror(errno);
    return r;
  }
  auto t0 = std::chrono::steady_clock::now();
  pid_t pid = fork();
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv{path.data()};
    std::vector<std::string> copy = args;
    for (auto& a : copy) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(path.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  auto deadline = t0 + std::chrono::seconds(timeout_s);
  char buf[4096];
  for (;;) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                    deadline - std::chrono::steady_clock::now())
                    .count();
    if (left <= 0) {
      r.timed_out = true;
      kill(pid, SIGKILL);
      break;
    }
    pollfd p{fds[0], POLLIN, 0};
    if (poll(&p, 1, static_cast<int>(left)) <= 0) continue;
    ssize_t n = read(fds[0], buf, sizeof(buf));
    if (n <= 0) break;  // the helper closed its output: it is exiting
    r.output.append(buf, static_cast<std::size_t>(n));
  }
  close(fds[0]);
  // Output closed; the process itself must end within the deadline too.
  while (!r.timed_out) {
    pid_t w = waitpid(pid, &r.status, WNOHANG);
    if (w == pid) break;
    if (std::chrono::steady_clock::now() > deadline) {
      r.timed_out = true;
      kill(pid, SIGKILL);
    }
    usleep(1000);
  }
  if (r.timed_out) waitpid(pid, &r.status, 0);
  r.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return r;
}

class ShutdownTest : public ::testing::TestWithParam<const char*> {
 protected:
  void SetUp() override {
    if (access(helper_path().c_str(), X_OK) != 0) {
      GTEST_SKIP() << "helper not built: " << helper_path()
                   << " (tests/CMakeLists.txt needs add_subdirectory(shutdown_programs))";
    }
  }

  void expect_clean_exit(const char* mode) {
    exit_report r = run_helper({mode, GetParam()});
    ASSERT_FALSE(r.timed_out) << mode << "/" << GetParam() << " hangs; output:\n" << r.output;
    ASSERT_TRUE(WIFEXITED(r.status))
        << mode << "/" << GetParam() << " died of signal "
        << (WIFSIGNALED(r.status) ? WTERMSIG(r.status) : 0) << "; output:\n"
        << r.output;
    EXPECT_EQ(WEXITSTATUS(r.status), 0) << r.output;
    EXPECT_NE(r.output.find("ok"), std::string::npos) << r.output;
    EXPECT_LT(r.seconds, 15.0);
  }
};

TEST_P(ShutdownTest, RightAfterCalls) { expect_clean_exit("calls"); }
TEST_P(ShutdownTest, WithThePoolIdle) { expect_clean_exit("idle"); }
TEST_P(ShutdownTest, WithABlockingOpStillRunning) { expect_clean_exit("blocked"); }
TEST_P(ShutdownTest, WhileAnotherThreadKeepsCalling) { expect_clean_exit("busy"); }

INSTANTIATE_TEST_SUITE_P(Exits, ShutdownTest, ::testing::Values("return", "exit"),
                         [](const auto& info) {
                           return std::string(info.param) == "exit" ? "StdExit" : "ReturnFromMain";
                         });

}  // namespace
