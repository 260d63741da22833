// SPDX-License-Identifier: MIT
// Runs redis-server as a child process and talks to it with hiredis's blocking API.
#include "local_redis.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>
#include <vector>

namespace xcs_test {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

struct context_deleter {
  void operator()(redisContext* c) const noexcept { redisFree(c); }
};
struct reply_deleter {
  void operator()(void* r) const noexcept { freeReplyObject(r); }
};

std::string reply_text(const redisReply* r) {
  switch (r->type) {
    case REDIS_REPLY_INTEGER:
      return std::to_string(r->integer);
    case REDIS_REPLY_NIL:
      return "(nil)";
    case REDIS_REPLY_ARRAY: {
      std::string out;
      for (std::size_t i = 0; i < r->elements; ++i) {
        if (i) out += ' ';
        out += reply_text(r->element[i]);
      }
      return out;
    }
    default:
      return std::string(r->str, r->len);
  }
}

}  // namespace

std::string redis_server_path() {
  // Found at configure time, and still there (a package removed since reads as none).
  const std::string path = XCS_REDIS_SERVER;
  return !path.empty() && ::access(path.c_str(), X_OK) == 0 ? path : std::string();
}

int pick_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    const int err = errno;
    ::close(fd);
    throw std::runtime_error(fmt::format("bind 127.0.0.1:0: {}", std::strerror(err)));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

local_redis::local_redis(const fs::path& work_dir) {
  static std::atomic<int> serial{0};
  dir_ = fs::absolute(work_dir) / fmt::format("redis-{}-{}", ::getpid(), serial++);
  fs::remove_all(dir_);
  fs::create_directories(dir_);
  // Another process may take the port between pick_free_port() and the server's bind.
  std::string why;
  for (int attempt = 0; attempt < 5; ++attempt) {
    port_ = pick_free_port();
    if (start(why)) return;
  }
  throw std::runtime_error("local_redis: redis-server did not start: " + why);
}

local_redis::~local_redis() {
  stop();
  std::error_code ignored;
  fs::remove_all(dir_, ignored);
}

std::string local_redis::url() const { return fmt::format("redis://127.0.0.1:{}", port_); }

bool local_redis::start(std::string& why) {
  const std::string server = redis_server_path();
  const std::string port = std::to_string(port_);
  const std::string dir = dir_.string();
  const std::string log = (dir_ / "redis.log").string();
  // Everything the child needs is made before fork: after it, only system calls.
  const char* argv[] = {server.c_str(), "--port",      port.c_str(), "--bind",    "127.0.0.1",
                        "--dir",        dir.c_str(),   "--save",     "",          "--appendonly",
                        "no",           "--daemonize", "no",         "--logfile", log.c_str(),
                        nullptr};
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    why = fmt::format("fork: {}", std::strerror(errno));
    return false;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);
    const int null_fd = ::open("/dev/null", O_RDWR);
    if (null_fd >= 0) {
      ::dup2(null_fd, 0);
      ::dup2(null_fd, 1);
    }
    ::execv(argv[0], const_cast<char* const*>(argv));
    ::_exit(127);
  }
  pid_ = pid;
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (::waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      why = fmt::format("redis-server exited on port {}: {}", port_, read_file(dir_ / "redis.log"));
      return false;
    }
    if (answers_ping()) return true;
    std::this_thread::sleep_for(10ms);
  }
  why = "no PING answer within 10 s: " + read_file(dir_ / "redis.log");
  stop();
  return false;
}

bool local_redis::answers_ping() const {
  try {
    return command("PING") == "PONG";
  } catch (const std::runtime_error&) {
    return false;
  }
}

std::string local_redis::command(const std::string& words, int db) const {
  timeval timeout{1, 0};
  std::unique_ptr<redisContext, context_deleter> c(
      redisConnectWithTimeout("127.0.0.1", port_, timeout));
  if (!c || c->err) {
    throw std::runtime_error(
        fmt::format("connect 127.0.0.1:{}: {}", port_, c ? c->errstr : "out of memory"));
  }
  redisSetTimeout(c.get(), timeout);
  if (db != 0) {
    std::unique_ptr<void, reply_deleter> selected(redisCommand(c.get(), "SELECT %d", db));
    if (!selected) throw std::runtime_error(fmt::format("SELECT {}: {}", db, c->errstr));
  }
  std::vector<std::string> parts;
  std::istringstream in(words);
  for (std::string w; in >> w;) parts.push_back(w);
  std::vector<const char*> argv;
  std::vector<std::size_t> lengths;
  for (const std::string& p : parts) {
    argv.push_back(p.c_str());
    lengths.push_back(p.size());
  }
  std::unique_ptr<void, reply_deleter> reply(
      redisCommandArgv(c.get(), static_cast<int>(argv.size()), argv.data(), lengths.data()));
  if (!reply) throw std::runtime_error(fmt::format("{}: {}", words, c->errstr));
  return reply_text(static_cast<redisReply*>(reply.get()));
}

void local_redis::signal(int signal) {
  if (pid_ <= 0) return;
  ::kill(pid_, signal);
  if (signal == SIGKILL) {
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
}

void local_redis::restart() {
  stop();
  std::string why;
  // The port was the server's: nobody else should take it in the moment between.
  if (!start(why)) throw std::runtime_error("local_redis: restart: " + why);
}

void local_redis::stop() {
  if (pid_ <= 0) return;
  ::kill(pid_, SIGCONT);  // a stopped server would not hear SIGTERM
  ::kill(pid_, SIGTERM);
  const auto deadline = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < deadline) {
    if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
      pid_ = -1;
      return;
    }
    std::this_thread::sleep_for(5ms);
  }
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  pid_ = -1;
}

std::string unique_key(const std::string& name) {
  return fmt::format("xcs-test:{}:{}:{}", name, ::getpid(),
                     std::chrono::steady_clock::now().time_since_epoch().count());
}

long resident_kb() {
  std::ifstream statm("/proc/self/statm");
  long pages = 0, resident = 0;
  statm >> pages >> resident;
  return resident * (::sysconf(_SC_PAGESIZE) / 1024);
}

}  // namespace xcs_test
