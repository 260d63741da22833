// SPDX-License-Identifier: MIT
// The HTTP tests' shared helpers.
#include "test_support.hpp"

#include "pipeline.hpp"

#include <curl/curl.h>
#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <regex>

extern char** environ;

namespace llm_test {
namespace {

using namespace std::chrono_literals;

// curl_global_init before any test (and any thread) sends a request.
const llm::curl_session curl_for_all_tests;

std::size_t append(char* data, std::size_t size, std::size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

}  // namespace

process_result run_process(const std::vector<std::string>& args,
                           const std::vector<std::string>& extra_env) {
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) {
    if (std::strncmp(*e, "XCS_LLM_URL=", 12) != 0) envp.push_back(*e);
  }
  for (const std::string& e : extra_env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return {};
  pid_t pid = ::fork();
  if (pid == 0) {
    ::dup2(fds[1], 1);
    ::dup2(fds[1], 2);
    ::execve(argv[0], argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  process_result r;
  char buf[4096];
  for (ssize_t n; (n = ::read(fds[0], buf, sizeof buf)) > 0;) r.output.append(buf, n);
  ::close(fds[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::map<std::string, std::string> parse_summary(const std::string& output) {
  std::map<std::string, std::string> out;
  std::size_t at = output.rfind("summary: ");
  if (at == std::string::npos) return out;
  std::string line = output.substr(at + 9, output.find('\n', at) - at - 9);
  std::regex pair(R"((\w+)=(\S+))");
  for (auto it = std::sregex_iterator(line.begin(), line.end(), pair); it != std::sregex_iterator();
       ++it) {
    out[(*it)[1]] = (*it)[2];
  }
  return out;
}

std::string expected_member_answer(const std::string& question, int member, int members) {
  return "Member " + std::to_string(member) + " of " + std::to_string(members) + " says about \"" +
         question + "\": 42.";
}

std::string expected_final(const std::string& question) {
  return "Final answer to \"" + question +
         "\":\nthe ensemble agrees (answer 1 was the best) \u2014 voil\u00e0 \U0001F30D";
}

int thread_count() {
  DIR* dir = ::opendir("/proc/self/task");
  if (dir == nullptr) return -1;
  int n = 0;
  while (dirent* entry = ::readdir(dir)) n += entry->d_name[0] != '.' ? 1 : 0;
  ::closedir(dir);
  return n;
}

std::string raise_open_files(unsigned long want) {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) return std::strerror(errno);
  if (limit.rlim_cur >= want) return {};
  if (limit.rlim_max != RLIM_INFINITY && limit.rlim_max < want) {
    return "the hard RLIMIT_NOFILE is " + std::to_string(limit.rlim_max) + ", below " +
           std::to_string(want);
  }
  limit.rlim_cur = want;
  if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) return std::strerror(errno);
  return {};
}

std::string server_missing() {
  if (std::string(XCS_LLM_NGINX).empty() || std::string(XCS_LLM_ECHO_MODULE).empty()) {
    return "nginx or its echo module was not found when configuring: install nginx and "
           "libnginx-mod-http-echo (make deps), then configure again";
  }
  return {};
}

std::unique_ptr<llm::local_server> start_server(int delay_ms) {
  llm::local_server_options o;
  o.nginx = XCS_LLM_NGINX;
  o.config_template = XCS_LLM_NGINX_TEMPLATE;
  o.echo_module = XCS_LLM_ECHO_MODULE;
  o.work_dir = XCS_LLM_WORK_DIR;
  o.delay_ms = delay_ms;
  o.slow_ms = 3000;
  return std::make_unique<llm::local_server>(o);
}

void stop_server(llm::local_server& server) {
  std::filesystem::path prefix = server.prefix();
  server.stop();
  // Keep the config and logs of a failed test for a look.
  if (!::testing::Test::HasFailure()) std::filesystem::remove_all(prefix);
}

std::string prompt(int i, int n) { return llm::member_prompt("q", i, n).prompt; }

std::vector<std::string> prompts(int n) {
  std::vector<std::string> out;
  for (int i = 0; i < n; ++i) out.push_back(prompt(i, n));
  return out;
}

void AsyncServerTest::SetUp() {
  if (std::string why = server_missing(); !why.empty()) GTEST_SKIP() << why;
  if (std::string why = raise_open_files(4 * kBurst); !why.empty()) {
    GTEST_SKIP() << "cannot raise RLIMIT_NOFILE for " << kBurst << " connections: " << why;
  }
  server_ = start_server(kAsyncDelayMs);
}

void AsyncServerTest::TearDown() {
  if (server_) stop_server(*server_);
}

llm::client_options AsyncServerTest::options(long timeout_ms) const {
  llm::client_options o;
  o.url = server_->chat_url();
  o.timeout_ms = timeout_ms;
  return o;
}

llm::client_options AsyncServerTest::options_at(const std::string& url) const {
  llm::client_options o = options();
  o.url = url;
  return o;
}

std::optional<llm::access_entry> await_log_entry(const llm::local_server& server,
                                                 std::string_view uri, int status,
                                                 std::chrono::milliseconds within) {
  const auto deadline = std::chrono::steady_clock::now() + within;
  for (;;) {
    for (const llm::access_entry& e : server.access_log()) {
      if (e.uri == uri && e.status == status) return e;
    }
    if (std::chrono::steady_clock::now() >= deadline) return std::nullopt;
    std::this_thread::sleep_for(2ms);
  }
}

std::int64_t wall_ms(std::chrono::system_clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(t.time_since_epoch()).count();
}

void expect_same_error(const std::optional<llm::llm_error>& direct,
                       const std::optional<llm::llm_error>& other) {
  ASSERT_TRUE(direct.has_value());
  ASSERT_TRUE(other.has_value());
  EXPECT_EQ(other->kind(), direct->kind());
  EXPECT_EQ(other->status(), direct->status());
  EXPECT_STREQ(other->what(), direct->what());
}

std::string op_kind_name(const ::testing::TestParamInfo<op_kind>& info) {
  return info.param == op_kind::async ? "AsyncOp" : "BlockingOp";
}

std::optional<std::chrono::steady_clock::time_point> await_recorded(
    const llm::timeline& log, std::string_view step, std::size_t n,
    std::chrono::milliseconds within) {
  const auto give_up = std::chrono::steady_clock::now() + within;
  while (log.count(step) < n) {
    if (std::chrono::steady_clock::now() >= give_up) return std::nullopt;
    std::this_thread::sleep_for(1ms);
  }
  return std::chrono::steady_clock::now();
}

status_sampler::status_sampler(std::string url) : url_(std::move(url)), thread_([this] { run(); }) {
  while (samples_.load() == 0 && !failed_.load()) std::this_thread::sleep_for(1ms);
}

void status_sampler::stop() {
  stop_.store(true);
  if (thread_.joinable()) thread_.join();
}

void status_sampler::run() {
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> h(curl_easy_init(), &curl_easy_cleanup);
  std::string page;
  curl_easy_setopt(h.get(), CURLOPT_URL, url_.c_str());
  curl_easy_setopt(h.get(), CURLOPT_WRITEFUNCTION, &append);
  curl_easy_setopt(h.get(), CURLOPT_WRITEDATA, &page);
  curl_easy_setopt(h.get(), CURLOPT_TIMEOUT_MS, 2000L);
  curl_easy_setopt(h.get(), CURLOPT_NOSIGNAL, 1L);
  while (!stop_.load()) {
    page.clear();
    if (curl_easy_perform(h.get()) != CURLE_OK) {
      failed_.store(true);
      return;
    }
    llm::server_status s = llm::parse_status(page);
    // The status request itself is one of the requests being written, and its connection
    // one of the active ones.
    max_writing_.store(std::max(max_writing_.load(), s.writing - 1));
    max_active_.store(std::max(max_active_.load(), s.active - 1));
    samples_.fetch_add(1);
    std::this_thread::sleep_for(2ms);
  }
}

}  // namespace llm_test
