// SPDX-License-Identifier: MIT
// 1,000 requests of 100 ms at once, against a local nginx: on the async client alone, and
// through an xcs::async_op in one jitted call. Each finishes within twice one request, on a
// few threads. Timed, so ctest runs these alone (RUN_SERIAL).
#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <vector>

#include "async_client.hpp"
#include "pipeline.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using namespace llm_test;

class BurstTest : public AsyncServerTest {};

/// One burst of `kBurst` requests started at once: its wall time and the most threads the
/// process had meanwhile; every reply is checked.
struct burst_result {
  double ms = 0;
  int peak_threads = 0;
  std::size_t callback_threads = 0;
};
burst_result burst(llm::async_client& api) {
  reply_board board(kBurst);
  burst_result r;
  r.ms = millis([&] {
    for (int i = 0; i < kBurst; ++i) api.start(prompt(i, kBurst), board.callback(i));
    r.peak_threads = board.wait_counting_threads();
  });
  for (int i = 0; i < kBurst; ++i) {
    EXPECT_EQ(board.text(i), expected_member_answer("q", i, kBurst)) << i;
  }
  r.callback_threads = board.threads().size();
  EXPECT_EQ(board.threads().count(std::this_thread::get_id()), 0u);
  return r;
}

TEST_F(BurstTest, AsyncClientTakesAboutOneRequestForAThousandAtOnceOnOneThread) {
  const int threads_before = thread_count();
  llm::async_client api(options());
  double one_ms = millis(
      [&] { EXPECT_EQ(api.complete(prompt(0, kBurst)), expected_member_answer("q", 0, kBurst)); });
  EXPECT_GE(one_ms, kAsyncDelayMs * 0.95);
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
        kBurst, kAsyncDelayMs, b.ms, one_ms, b.peak_threads, threads_before);
  }
  if (kCheckTimes) {
    EXPECT_EQ(api.peak_in_flight(), kBurst);
  }
  EXPECT_EQ(api.requests(), 1 + bursts.size() * kBurst);

  // At the server: every request, and (as 1,000 of 100 ms took under 200 ms) at least half of
  // them at once.
  std::vector<llm::access_entry> served = server_->access_log();
  auto chats = std::count_if(served.begin(), served.end(), [](const llm::access_entry& e) {
    return e.uri == "/v1/chat/completions";
  });
  EXPECT_EQ(chats, static_cast<long>(1 + bursts.size() * kBurst));
  int overlap = llm::max_overlap(served, "/v1/chat/completions");
  if (kCheckTimes) {
    EXPECT_GE(overlap, kBurst / 2);
  }
  std::printf("peak %d in flight at the server (access log)\n", overlap);
}
/// Samples the process's threads every millisecond on a thread of its own, which it does not
/// count.
class thread_sampler {
 public:
  thread_sampler() : thread_([this] { run(); }) {}
  ~thread_sampler() { stop(); }
  int stop() {
    stop_.store(true);
    if (thread_.joinable()) thread_.join();
    return most_.load();
  }

 private:
  void run() {
    while (!stop_.load()) {
      most_.store(std::max(most_.load(), thread_count() - 1));
      std::this_thread::sleep_for(1ms);
    }
  }
  std::atomic<bool> stop_{false};
  std::atomic<int> most_{0};
  std::thread thread_;  // last: it starts running in the constructor
};

TEST_F(BurstTest, AsyncOpTakesAboutOneRequestForAThousandInOneCallOnFewThreads) {
  const int threads_before = thread_count();
  llm::async_client api(options());
  auto llm = xcs::async_op("llm", chat_op(api));
  auto fan_out = xcs::jit(all_requests(llm));
  const std::vector<std::string> questions = prompts(kBurst);

  double one_ms =
      millis([&] { EXPECT_EQ(llm(questions[0]), expected_member_answer("q", 0, kBurst)); });
  EXPECT_GE(one_ms, kAsyncDelayMs * 0.95);

  // As in the client's own test: the first call also opens the connections (and traces, and
  // starts xcs's pool); up to three calls, the fastest within the bound, each printed.
  double fastest_ms = 1e9;
  int calls = 0, peak_threads = 0;
  while (calls < (kCheckTimes ? 3 : 1) && fastest_ms >= 2 * one_ms) {
    std::vector<std::string> replies;
    thread_sampler sampler;
    double ms = millis([&] { replies = fan_out(questions); });
    int most = sampler.stop();
    ++calls;
    ASSERT_EQ(replies.size(), questions.size());
    for (int i = 0; i < kBurst; ++i) {
      ASSERT_EQ(replies[i], expected_member_answer("q", i, kBurst)) << i;
    }
    peak_threads = std::max(peak_threads, most);
    fastest_ms = std::min(fastest_ms, ms);
    std::printf(
        "%d requests of %d ms in one jitted call: %.1f ms (one alone: %.1f ms); peak %d "
        "threads in the process (%d before the first call, the sampler not counted)\n",
        kBurst, kAsyncDelayMs, ms, one_ms, most, threads_before);
  }
  if (kCheckTimes) {
    EXPECT_LT(fastest_ms, 2 * one_ms);
    EXPECT_EQ(api.peak_in_flight(), kBurst);
  }
  if (fresh_process(threads_before)) {
    EXPECT_LE(peak_threads, kMaxThreads);
  }
  EXPECT_EQ(fan_out.stats().fallback_calls, 0u);
  std::printf("peak %d in flight at the server (access log)\n",
              llm::max_overlap(server_->access_log(), "/v1/chat/completions"));
}

}  // namespace
