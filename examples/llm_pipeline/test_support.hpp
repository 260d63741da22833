// SPDX-License-Identifier: MIT
// What the example's HTTP tests share: the fake model's answers, a local nginx per test, a
// stub_status sampler, and helpers to catch and compare llm_errors.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "async_client.hpp"
#include "llm_client.hpp"
#include "local_server.hpp"
#include "pipeline.hpp"

namespace llm_test {

// Sanitizers multiply the CPU cost of 1,000 requests several times over (2 s a burst under
// TSan), and the time bound is about CPU: their builds check everything else, on one burst.
#if defined(XCS_SANITIZE_ADDRESS) || defined(XCS_SANITIZE_THREAD)
inline constexpr bool kCheckTimes = false;
#else
inline constexpr bool kCheckTimes = true;
#endif

/// A process's exit code (128 + the signal if one ended it) and its stdout and stderr.
struct process_result {
  int exit_code = -1;
  std::string output;  // stdout and stderr
};

/// Runs `args` (args[0] is the executable) with `extra_env` added to this environment, less
/// any XCS_LLM_URL of the caller's.
process_result run_process(const std::vector<std::string>& args,
                           const std::vector<std::string>& extra_env = {});

/// The "summary: key=value ..." line of the example's output.
std::map<std::string, std::string> parse_summary(const std::string& output);

/// What the fake model in nginx.conf.in answers to each of the pipeline's prompts.
std::string expected_member_answer(const std::string& question, int member, int members);
inline const std::string kExpectedVerdict = "Answer 1 is the best.";
std::string expected_final(const std::string& question);

/// Why the tests cannot start a local nginx (it or its echo module was not found when
/// configuring), or an empty string if they can. Fixtures GTEST_SKIP with it.
std::string server_missing();

/// A local nginx whose chat endpoint answers after `delay_ms` (and /v1/slow/ after 3 s), with
/// its files under the build tree.
std::unique_ptr<llm::local_server> start_server(int delay_ms);
/// Stops `server` and removes its files, unless the running test failed.
void stop_server(llm::local_server& server);

/// Threads of this process, from /proc/self/task.
int thread_count();

/// The process-wide thread bound of the issue (at most 8 threads) means something only in a
/// process that runs one test, as ctest runs them: a test run after others in the same process
/// inherits their threads (xcs's blocking lane keeps idle threads a while).
inline constexpr int kMaxThreads = 8;
inline bool fresh_process(int threads_at_test_start) { return threads_at_test_start == 1; }

/// Raises this process's soft RLIMIT_NOFILE to `want` if it is lower (nginx, started after,
/// inherits it). Returns why it cannot, or an empty string.
std::string raise_open_files(unsigned long want);

template <class Fn>
double millis(Fn&& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

/// The exception an llm request threw, if any; other exceptions pass through.
template <class Fn>
std::optional<llm::llm_error> llm_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const llm::llm_error& e) {
    return e;
  }
  return std::nullopt;
}

/// The first line of `server`'s access log for `uri` with `status`, polled every 2 ms for up
/// to `within` (nginx writes a line when a request ends, which for a request its client
/// abandoned is when nginx notices the close); nullopt if none came.
std::optional<llm::access_entry> await_log_entry(const llm::local_server& server,
                                                 std::string_view uri, int status,
                                                 std::chrono::milliseconds within);

/// Milliseconds on nginx's clock ($msec, the wall clock) at `t`, to compare with an access
/// log entry's end_ms.
std::int64_t wall_ms(std::chrono::system_clock::time_point t);

/// Both are set, and are the same failure: kind, status and message.
void expect_same_error(const std::optional<llm::llm_error>& direct,
                       const std::optional<llm::llm_error>& other);

/// The exception of type `E` that `fn` threw, if any; others pass through.
template <class E, class Fn>
std::optional<E> error_of(Fn&& fn) {
  try {
    fn();
  } catch (const E& e) {
    return e;
  }
  return std::nullopt;
}

/// Which of the pipeline's chat ops a test sends its requests through.
enum class op_kind { blocking, async };
/// "BlockingOp" or "AsyncOp", for INSTANTIATE_TEST_SUITE_P.
std::string op_kind_name(const ::testing::TestParamInfo<op_kind>& info);

/// The pipeline's ops over clients of one URL: requests go through the async client for
/// op_kind::async, else through the blocking one. The ops reference the clients and the
/// timeline, so a test keeps them until every request the ops started has ended (a bounded
/// call, or an op's timeout, may leave requests running when the call returns;
/// `await_recorded` waits for them).
struct ops_at {
  /// `policy` is the chat ops' `llm::chat_policy`, or their max_concurrency.
  template <class Policy>
  ops_at(const llm::client_options& options, llm::timeline& log, op_kind kind, int members,
         const Policy& policy)
      : blocking(options),
        async(kind == op_kind::async ? std::optional<llm::async_client>(std::in_place, options)
                                     : std::nullopt),
        ops(blocking, log, members, policy, async ? &*async : nullptr) {}

  std::uint64_t requests() const { return async ? async->requests() : blocking.requests(); }
  int in_flight() const { return async ? async->in_flight() : blocking.in_flight(); }

  llm::client blocking;
  std::optional<llm::async_client> async;
  llm::pipeline_ops ops;
};

/// Waits until `log` holds `n` requests of `step`, each recorded when its request ended;
/// returns when, or nullopt after `within`.
std::optional<std::chrono::steady_clock::time_point> await_recorded(
    const llm::timeline& log, std::string_view step, std::size_t n,
    std::chrono::milliseconds within);

/// Polls nginx's stub_status over one keep-alive connection while requests are in flight, and
/// keeps the most requests and connections it saw besides its own.
class status_sampler {
 public:
  explicit status_sampler(std::string url);
  ~status_sampler() { stop(); }

  void stop();
  int max_requests() const { return max_writing_.load(); }
  int max_connections() const { return max_active_.load(); }
  int samples() const { return samples_.load(); }
  bool failed() const { return failed_.load(); }

 private:
  void run();

  std::string url_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> failed_{false};
  std::atomic<int> samples_{0};
  std::atomic<int> max_writing_{0};
  std::atomic<int> max_active_{0};
  std::thread thread_;  // last: it starts running in the constructor
};

/// A body that sends every prompt of a vector through `llm`, each request independent of the
/// others, and returns the replies.
template <class Op>
auto all_requests(const Op& llm) {
  return [llm](const auto& prompts) { return xcs::map(llm, prompts); };
}

/// Eight requests of `delay_ms` through an op with max_concurrency(2) took `ms`: four rounds of
/// two, and at most (and at some point exactly) two in flight by each of three measurements: the
/// server's own request intervals, its live counters, and the client's.
template <class Client, class Op>
void expect_two_at_a_time(const llm::local_server& server, const status_sampler& sampler,
                          const Client& api, const Op& llm, double ms, int delay_ms,
                          const char* what) {
  int logged = llm::max_overlap(server.access_log(), "/v1/chat/completions");
  EXPECT_GE(ms, 4 * delay_ms * 0.95);
  EXPECT_EQ(logged, 2);
  EXPECT_FALSE(sampler.failed());
  EXPECT_EQ(sampler.max_requests(), 2) << sampler.samples() << " samples";
  EXPECT_LE(sampler.max_connections(), 2) << sampler.samples() << " samples";
  EXPECT_EQ(api.peak_in_flight(), 2);
  EXPECT_EQ(llm.peak_concurrency(), 2u);
  std::printf(
      "%s, bound 2: %.1f ms; peak at the server %d (access log), %d requests and %d "
      "connections (stub_status, %d samples)\n",
      what, ms, logged, sampler.max_requests(), sampler.max_connections(), sampler.samples());
}

/// An async op's function over `api`: starts the request; the event thread completes it.
inline auto chat_op(llm::async_client& api) {
  return [&api](const std::string& prompt, xcs::completion<std::string> done) {
    api.start(prompt, llm::completing(std::move(done)));
  };
}

/// How long the async tests' server takes per chat request, and their burst of requests.
inline constexpr int kAsyncDelayMs = 100;
inline constexpr int kBurst = 1000;

/// The prompt of member `i` of `n` about "q"; the fake model answers
/// expected_member_answer("q", i, n).
std::string prompt(int i, int n);
std::vector<std::string> prompts(int n);

/// A local nginx answering after kAsyncDelayMs, in a process allowed enough open files for
/// kBurst connections at each end (nginx inherits the limit). Skips without nginx, or when the
/// hard RLIMIT_NOFILE is too low.
class AsyncServerTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;
  llm::client_options options(long timeout_ms = 10000) const;
  /// The same, for another URL of the server.
  llm::client_options options_at(const std::string& url) const;

  std::unique_ptr<llm::local_server> server_;
};

/// The replies of requests started with `callback(i)`, collected as they come.
class reply_board {
 public:
  explicit reply_board(int n) : replies_(n), threads_(n) {}

  llm::reply_callback callback(int i) {
    return [this, i](llm::reply_or_error r) {
      std::lock_guard lock(mutex_);
      replies_[i] = std::move(r);
      threads_[i] = std::this_thread::get_id();
      // Only the last wakes the waiter: it samples on its own clock, not per reply.
      if (++done_ == static_cast<int>(replies_.size())) changed_.notify_all();
    };
  }
  /// Waits until every request has ended, sampling the process's threads every millisecond;
  /// returns the most it saw.
  int wait_counting_threads() {
    int most = thread_count();
    std::unique_lock lock(mutex_);
    while (done_ < static_cast<int>(replies_.size())) {
      changed_.wait_for(lock, std::chrono::milliseconds(1));
      lock.unlock();
      most = std::max(most, thread_count());
      lock.lock();
    }
    return most;
  }
  std::string text(int i) { return std::move(replies_[i]).value(); }
  std::set<std::thread::id> threads() const { return {threads_.begin(), threads_.end()}; }
  int done() {
    std::lock_guard lock(mutex_);
    return done_;
  }

 private:
  std::mutex mutex_;  // guards all below
  std::condition_variable changed_;
  std::vector<llm::reply_or_error> replies_;
  std::vector<std::thread::id> threads_;
  int done_ = 0;
};

}  // namespace llm_test
