// SPDX-License-Identifier: MIT
// Runs nginx as a child process from the templated config, and reads its status and access log.
#include "local_server.hpp"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <memory>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace llm {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

void replace_all(std::string& text, std::string_view key, std::string_view value) {
  for (std::size_t at = text.find(key); at != std::string::npos;
       at = text.find(key, at + value.size())) {
    text.replace(at, key.size(), value);
  }
}

std::string seconds(int ms) { return fmt::format("{}.{:03}", ms / 1000, ms % 1000); }

std::size_t append_body(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

// "1795788057.093" -> 1795788057093; the log has exactly three decimals.
std::int64_t parse_millis(std::string_view text) {
  std::int64_t v = 0;
  for (char c : text) {
    if (c >= '0' && c <= '9') v = v * 10 + (c - '0');
  }
  return v;
}

}  // namespace

int pick_free_port() {
  int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(fmt::format("socket: {}", std::strerror(errno)));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    int err = errno;
    ::close(fd);
    throw std::runtime_error(fmt::format("bind 127.0.0.1:0: {}", std::strerror(err)));
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

server_status parse_status(std::string_view page) {
  // "Active connections: 1 \nserver accepts handled requests\n 5 5 5 \n"
  // "Reading: 0 Writing: 1 Waiting: 0 \n"
  server_status s;
  std::istringstream in{std::string(page)};
  std::string word;
  while (in >> word) {
    if (word == "connections:") {
      in >> s.active;
    } else if (word == "requests") {
      std::uint64_t accepts = 0, handled = 0;
      in >> accepts >> handled >> s.requests;
    } else if (word == "Reading:") {
      in >> s.reading;
    } else if (word == "Writing:") {
      in >> s.writing;
    } else if (word == "Waiting:") {
      in >> s.waiting;
    }
  }
  return s;
}

int max_overlap(const std::vector<access_entry>& log, std::string_view uri) {
  // (time, +1) at a start and (time, -1) at an end; at equal times ends sort first.
  std::vector<std::pair<std::int64_t, int>> events;
  for (const access_entry& e : log) {
    if (e.uri != uri) continue;
    events.emplace_back(e.end_ms - e.duration_ms, +1);
    events.emplace_back(e.end_ms, -1);
  }
  std::sort(events.begin(), events.end());
  int now = 0, most = 0;
  for (const auto& [time, delta] : events) {
    now += delta;
    most = std::max(most, now);
  }
  return most;
}

local_server::local_server(local_server_options options) : options_(std::move(options)) {
  static std::atomic<int> serial{0};
  prefix_ = fs::absolute(options_.work_dir) / fmt::format("nginx-{}-{}", ::getpid(), serial++);
  fs::remove_all(prefix_);
  fs::create_directories(prefix_ / "logs");
  fs::create_directories(prefix_ / "tmp");

  // Another process may take the port between pick_free_port() and nginx's bind: try again.
  std::string why;
  for (int attempt = 0; attempt < 5; ++attempt) {
    if (start_on(pick_free_port(), why)) return;
    if (why.find("Address already in use") == std::string::npos) break;
  }
  throw std::runtime_error("local_server: nginx did not start: " + why);
}

local_server::~local_server() { stop(); }

bool local_server::start_on(int port, std::string& why) {
  std::string config = read_file(options_.config_template);
  if (config.empty()) {
    why = "cannot read the config template " + options_.config_template;
    return false;
  }
  replace_all(config, "@PREFIX@", prefix_.string());
  replace_all(config, "@PORT@", std::to_string(port));
  replace_all(config, "@ECHO_MODULE@", options_.echo_module);
  replace_all(config, "@DELAY_S@", seconds(options_.delay_ms));
  replace_all(config, "@SLOW_S@", seconds(options_.slow_ms));
  replace_all(config, "@LIMIT_RATE@", std::to_string(limited_rate_per_second));
  replace_all(config, "@LIMIT_BURST@", std::to_string(limited_burst));
  // As root nginx would switch to "nobody", which may not exist in a container.
  replace_all(config, "@USER_DIRECTIVE@", ::geteuid() == 0 ? "user root;" : "");
  const fs::path config_path = prefix_ / "nginx.conf";
  std::ofstream(config_path, std::ios::binary | std::ios::trunc) << config;
  fs::remove(prefix_ / "logs" / "error.log");

  // Everything the child needs is made before fork: after it, only system calls.
  const std::string prefix_arg = prefix_.string() + "/";
  const std::string config_arg = config_path.string();
  const std::string error_log = (prefix_ / "logs" / "error.log").string();
  const std::string output = (prefix_ / "logs" / "stderr.log").string();
  const char* argv[] = {options_.nginx.c_str(), "-p", prefix_arg.c_str(), "-c",
                        config_arg.c_str(),     "-e", error_log.c_str(),  nullptr};
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    why = fmt::format("fork: {}", std::strerror(errno));
    return false;
  }
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(1);  // the parent died before prctl
    int null_in = ::open("/dev/null", O_RDONLY);
    int out = ::open(output.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (null_in >= 0) ::dup2(null_in, 0);
    if (out >= 0) {
      ::dup2(out, 1);
      ::dup2(out, 2);
    }
    ::execv(argv[0], const_cast<char* const*>(argv));
    ::_exit(127);
  }
  pid_ = pid;
  port_ = port;

  // Ready once it answers its status page: a bare connect could reach another process that
  // took the port, while nginx itself failed to bind and is about to exit.
  const auto deadline = std::chrono::steady_clock::now() + 10s;
  while (std::chrono::steady_clock::now() < deadline) {
    int wstatus = 0;
    if (::waitpid(pid_, &wstatus, WNOHANG) == pid_) {
      pid_ = -1;
      why = fmt::format(
          "nginx exited ({}{}) on port {}: {}{}", WIFEXITED(wstatus) ? "status " : "signal ",
          WIFEXITED(wstatus) ? WEXITSTATUS(wstatus) : WTERMSIG(wstatus), port,
          read_file(prefix_ / "logs" / "stderr.log"), read_file(prefix_ / "logs" / "error.log"));
      return false;
    }
    try {
      if (status().writing >= 1) return true;
    } catch (const std::runtime_error&) {
      // not listening yet
    }
    std::this_thread::sleep_for(10ms);
  }
  why = "nginx did not answer within 10 s: " + read_file(prefix_ / "logs" / "error.log");
  stop();
  return false;
}

void local_server::stop() {
  if (pid_ <= 0) return;
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

std::string local_server::url(std::string_view path) const {
  return fmt::format("http://127.0.0.1:{}{}", port_, path);
}

server_status local_server::status() const {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> h(curl_easy_init(), &curl_easy_cleanup);
  if (!h) throw std::runtime_error("curl_easy_init failed");
  std::string page;
  const std::string status_url = url("/nginx_status");
  curl_easy_setopt(h.get(), CURLOPT_URL, status_url.c_str());
  curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, &append_body);
  curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &page);
  curl_easy_setopt(h.get(), CURLOPT_TIMEOUT_MS, 2000L);
  curl_easy_setopt(h.get(), CURLOPT_NOSIGNAL, 1L);
  long code = 0;
  CURLcode rc = curl_easy_perform(h.get());
  curl_easy_getinfo(h.get(), CURLINFO_RESPONSE_CODE, &code);
  if (rc != CURLE_OK || code != 200) {
    throw std::runtime_error(
        fmt::format("GET {}: {} (HTTP {})", status_url, curl_easy_strerror(rc), code));
  }
  return parse_status(page);
}

std::vector<access_entry> local_server::access_log() const {
  std::vector<access_entry> out;
  std::ifstream in(prefix_ / "logs" / "access.log");
  std::string end, duration;
  access_entry e;
  while (in >> end >> duration >> e.status >> e.uri) {
    e.end_ms = parse_millis(end);
    e.duration_ms = parse_millis(duration);
    out.push_back(e);
  }
  return out;
}

}  // namespace llm
