// SPDX-License-Identifier: MIT
// The async (multi-interface) client on its own, against a local nginx: 1,000 requests at
// once on one event thread, requests from many threads, callbacks on the event thread, the
// blocking client's errors, and a destroyed client failing what it still holds.
#include <algorithm>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "async_client.hpp"
#include "pipeline.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using namespace llm_test;

constexpr int kDelayMs = 100;  // how long the server takes per chat request
constexpr int kRequests = 1000;

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
      changed_.wait_for(lock, 1ms);
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

class AsyncClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = server_missing(); !why.empty()) GTEST_SKIP() << why;
    // 1,000 connections at each end, in this one process and in nginx.
    if (std::string why = raise_open_files(4 * kRequests); !why.empty()) {
      GTEST_SKIP() << "cannot raise RLIMIT_NOFILE for " << kRequests << " connections: " << why;
    }
    server_ = start_server(kDelayMs);
  }
  void TearDown() override {
    if (server_) stop_server(*server_);
  }
  llm::client_options options(long timeout_ms = 10000) const {
    llm::client_options o;
    o.url = server_->chat_url();
    o.timeout_ms = timeout_ms;
    return o;
  }

  std::unique_ptr<llm::local_server> server_;
};

std::string prompt(int i, int n = kRequests) { return llm::member_prompt("q", i, n).prompt; }

/// One burst of `kRequests` requests started at once: its wall time and the most threads the
/// process had meanwhile; every reply is checked.
struct burst_result {
  double ms = 0;
  int peak_threads = 0;
  std::size_t callback_threads = 0;
};
burst_result burst(llm::async_client& api) {
  reply_board board(kRequests);
  burst_result r;
  r.ms = millis([&] {
    for (int i = 0; i < kRequests; ++i) api.start(prompt(i), board.callback(i));
    r.peak_threads = board.wait_counting_threads();
  });
  for (int i = 0; i < kRequests; ++i) {
    EXPECT_EQ(board.text(i), expected_member_answer("q", i, kRequests)) << i;
  }
  r.callback_threads = board.threads().size();
  EXPECT_EQ(board.threads().count(std::this_thread::get_id()), 0u);
  return r;
}

TEST_F(AsyncClientTest, ThousandRequestsAtOnceTakeAboutOneRequestOnOneEventThread) {
  const int threads_before = thread_count();
  llm::async_client api(options());
  double one_ms = millis(
      [&] { EXPECT_EQ(api.complete(prompt(0)), expected_member_answer("q", 0, kRequests)); });
  EXPECT_GE(one_ms, kDelayMs * 0.95);
  // The client's event thread (and, in a sanitizer build, the sanitizer's own) is running now.
  const int threads_idle = thread_count();
  if (kCheckTimes) {
    EXPECT_EQ(threads_idle, threads_before + 1);
  }

  // The first burst opens 1,000 connections (nginx accepts them on the same 2 cores); later
  // ones reuse them. On a busy machine a burst can lose the CPU for a while, so up to three
  // are run and the fastest must meet the bound; each is printed.
  std::vector<burst_result> bursts;
  double fastest_ms = 1e9;
  while (bursts.size() < (kCheckTimes ? 3u : 1u) && fastest_ms >= 2 * one_ms) {
    bursts.push_back(burst(api));
    fastest_ms = std::min(fastest_ms, bursts.back().ms);
    if (HasFailure()) return;
  }
  if (kCheckTimes) {
    EXPECT_LT(fastest_ms, 2 * one_ms);
  }
  for (const burst_result& b : bursts) {
    // No thread added during the burst, and every callback ran on the event thread.
    EXPECT_LE(b.peak_threads, threads_idle);
    if (fresh_process(threads_before)) {
      EXPECT_LE(b.peak_threads, kMaxThreads);
    }
    EXPECT_EQ(b.callback_threads, 1u);
    std::printf(
        "%d requests of %d ms at once: %.1f ms (one alone: %.1f ms), peak %d threads "
        "in the process (%d before the client)\n",
        kRequests, kDelayMs, b.ms, one_ms, b.peak_threads, threads_before);
  }
  if (kCheckTimes) {
    EXPECT_EQ(api.peak_in_flight(), kRequests);
  }
  EXPECT_EQ(api.requests(), 1 + bursts.size() * kRequests);

  // At the server: every request, and (as 1,000 of 100 ms took under 200 ms) at least half of
  // them at once.
  std::vector<llm::access_entry> served = server_->access_log();
  auto chats = std::count_if(served.begin(), served.end(), [](const llm::access_entry& e) {
    return e.uri == "/v1/chat/completions";
  });
  EXPECT_EQ(chats, static_cast<long>(1 + bursts.size() * kRequests));
  int overlap = llm::max_overlap(served, "/v1/chat/completions");
  if (kCheckTimes) {
    EXPECT_GE(overlap, kRequests / 2);
  }
  std::printf("peak %d in flight at the server (access log)\n", overlap);
}

TEST_F(AsyncClientTest, RequestsFromManyThreadsAllComplete) {
  llm::async_client api(options());
  constexpr int kThreads = 8, kEach = 25;
  reply_board board(kThreads * kEach);
  std::vector<std::thread> starters;
  for (int t = 0; t < kThreads; ++t) {
    starters.emplace_back([&, t] {
      for (int i = t * kEach; i < (t + 1) * kEach; ++i)
        api.start(prompt(i, 200), board.callback(i));
    });
  }
  for (std::thread& t : starters) t.join();
  board.wait_counting_threads();
  for (int i = 0; i < kThreads * kEach; ++i) {
    EXPECT_EQ(board.text(i), expected_member_answer("q", i, 200)) << i;
  }
  EXPECT_EQ(board.threads().size(), 1u);
}

TEST_F(AsyncClientTest, FailuresAreTheBlockingClientsErrors) {
  llm::client blocking(options(/*timeout_ms=*/300));
  llm::async_client async(options(/*timeout_ms=*/300));
  const std::string p = prompt(0);
  const std::string refused =
      "http://127.0.0.1:" + std::to_string(llm::pick_free_port()) + "/v1/chat/completions";
  struct expected {
    std::string url;
    llm::failure kind;
    long status;
  };
  for (const expected& bad : {
           expected{server_->url("/v1/fail500/chat/completions"), llm::failure::http_status, 500},
           expected{server_->url("/v1/fail429/chat/completions"), llm::failure::http_status, 429},
           expected{server_->url("/v1/slow/chat/completions"), llm::failure::timeout, 0},
           expected{server_->url("/v1/garbage/chat/completions"), llm::failure::bad_response, 200},
           expected{refused, llm::failure::transport, 0},
       }) {
    auto direct = llm_error_of([&] { blocking.complete(bad.url, p); });
    auto via_multi = llm_error_of([&] { async.complete(bad.url, p); });
    expect_same_error(direct, via_multi);
    ASSERT_TRUE(direct.has_value()) << bad.url;
    EXPECT_EQ(direct->kind(), bad.kind) << direct->what();
    EXPECT_EQ(direct->status(), bad.status) << direct->what();
  }
  // A message names no timing, so the same failure reads the same on both paths.
  auto refused_error = llm_error_of([&] { async.complete(refused, p); });
  ASSERT_TRUE(refused_error.has_value());
  EXPECT_NE(std::string(refused_error->what()).find("Couldn't connect to server"),
            std::string::npos)
      << refused_error->what();
  EXPECT_EQ(std::string(refused_error->what()).find(" ms"), std::string::npos)
      << refused_error->what();
}

TEST_F(AsyncClientTest, ATimeoutEndsOnTimeWhileOtherRequestsGoOn) {
  llm::async_client api(options(/*timeout_ms=*/300));
  reply_board board(11);
  const auto t0 = std::chrono::steady_clock::now();
  std::vector<double> ended_ms(11);
  std::mutex mutex;
  auto timed = [&](int i) {
    return [&, i, inner = board.callback(i)](llm::reply_or_error r) mutable {
      {
        std::lock_guard lock(mutex);
        ended_ms[i] =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count();
      }
      inner(std::move(r));
    };
  };
  api.start(server_->url("/v1/slow/chat/completions"), prompt(0), timed(0));
  for (int i = 1; i < 11; ++i) api.start(prompt(i, 11), timed(i));
  board.wait_counting_threads();
  auto timeout = llm_error_of([&] { board.text(0); });
  ASSERT_TRUE(timeout.has_value());
  EXPECT_EQ(timeout->kind(), llm::failure::timeout);
  for (int i = 1; i < 11; ++i) {
    EXPECT_EQ(board.text(i), expected_member_answer("q", i, 11));
    EXPECT_LT(ended_ms[i], ended_ms[0]) << i;  // not held up by the slow one
  }
  EXPECT_GE(ended_ms[0], 300 * 0.95);
  EXPECT_LT(ended_ms[0], 1000);  // not the slow reply's 3 s
}

TEST_F(AsyncClientTest, DestroyingTheClientFailsWhatItStillHolds) {
  constexpr int kHeld = 10;
  reply_board board(kHeld);
  std::string url = server_->url("/v1/slow/chat/completions");
  std::optional<llm::async_client> api(std::in_place, options());
  for (int i = 0; i < kHeld; ++i) api->start(url, prompt(i), board.callback(i));
  while (api->in_flight() < kHeld) std::this_thread::sleep_for(1ms);
  double destroy_ms = millis([&] { api.reset(); });
  ASSERT_EQ(board.done(), kHeld);
  for (int i = 0; i < kHeld; ++i) {
    auto error = llm_error_of([&] { board.text(i); });
    ASSERT_TRUE(error.has_value());
    EXPECT_EQ(error->kind(), llm::failure::transport);
    EXPECT_EQ(std::string(error->what()),
              "llm request to " + url + " failed: the client was destroyed");
  }
  EXPECT_LT(destroy_ms, 1000);  // without waiting for the slow replies (3 s)
}

}  // namespace
