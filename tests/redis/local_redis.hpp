// SPDX-License-Identifier: MIT
// A redis-server for tests: on a free loopback port, in its own directory, started and stopped
// by the test (as examples/llm_pipeline's local_server does with nginx).
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <string>

/// Skips a test that needs a redis-server when none is installed, saying how to get one.
#define XCS_NEED_REDIS_SERVER()                                                           \
  do {                                                                                    \
    if (xcs_test::redis_server_path().empty()) {                                          \
      GTEST_SKIP() << "redis-server is not installed (Debian: redis-server; 'make deps' " \
                      "installs it): the tests against a real Redis are skipped";         \
    }                                                                                     \
  } while (0)

namespace xcs_test {

/// The redis-server the build found, if it is still there ("" if not): tests skip without it.
std::string redis_server_path();

/// redis-server as a child process in the foreground, without persistence (--save "",
/// --appendonly no), with its directory and log under `work_dir`. The constructor returns once
/// it answers PING; the destructor stops it. If the test process dies first, the kernel kills
/// it (PR_SET_PDEATHSIG). Not thread-safe.
class local_redis {
 public:
  /// Starts it on a free port; throws std::runtime_error with its log if it does not come up.
  explicit local_redis(const std::filesystem::path& work_dir);
  ~local_redis();
  local_redis(const local_redis&) = delete;
  local_redis& operator=(const local_redis&) = delete;

  int port() const noexcept { return port_; }
  pid_t pid() const noexcept { return pid_; }
  /// "redis://127.0.0.1:<port>".
  std::string url() const;

  /// Sends `signal` to the server (SIGSTOP, SIGCONT); after SIGKILL, reaps it.
  void signal(int signal);
  /// Starts it again on the same port (after a kill), waiting until it answers.
  void restart();
  /// Stops it (SIGTERM, then SIGKILL after 3 s). Idempotent.
  void stop();

  /// Runs one command (words split on spaces) in database `db`, on a connection of its own, and
  /// returns the reply as text (an integer as its digits, an error as "ERR ..."); throws
  /// std::runtime_error when the server cannot be reached.
  std::string command(const std::string& words, int db = 0) const;

 private:
  bool start(std::string& why);
  bool answers_ping() const;

  std::filesystem::path dir_;
  int port_ = 0;
  pid_t pid_ = -1;
};

/// A loopback TCP port that was free a moment ago.
int pick_free_port();

/// Milliseconds since `t0` (steady clock).
inline double ms_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// The resident set of this process, in kB.
long resident_kb();

/// A Redis key (or key prefix) no other test or earlier run used: "xcs-test:<name>:<pid>:<now>".
std::string unique_key(const std::string& name);

}  // namespace xcs_test
