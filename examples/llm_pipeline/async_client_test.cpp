// SPDX-License-Identifier: MIT
// The async (multi-interface) client on its own, against a local nginx: requests from many
// threads, callbacks on the event thread, the blocking client's errors, a timeout among good
// requests, and a destroyed client failing what it still holds. (1,000 at once: burst_test.)
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

class AsyncClientTest : public AsyncServerTest {};

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
  const std::string p = prompt(0, 1);
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
  api.start(server_->url("/v1/slow/chat/completions"), prompt(0, 11), timed(0));
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
  for (int i = 0; i < kHeld; ++i) api->start(url, prompt(i, kHeld), board.callback(i));
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
