// SPDX-License-Identifier: MIT
// nginx's own rate limit on /v1/limited/chat/completions, from the client's side: requests at
// once beyond its burst are rejected with 429 at once, and requests under its rate are all
// answered. The numbers are local_server.hpp's, which the config is made from.
#include <chrono>
#include <cmath>
#include <string>
#include <thread>

#include "async_client.hpp"
#include "llm_client.hpp"
#include "local_server.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using namespace llm_test;

class RateLimitTest : public AsyncServerTest {};

TEST_F(RateLimitTest, RequestsAtOnceBeyondTheBurstGet429) {
  constexpr int kRequests = 200;
  llm::async_client api(options());
  reply_board board(kRequests);
  const double ms = millis([&] {
    for (int i = 0; i < kRequests; ++i) {
      api.start(server_->limited_url(), prompt(i, kRequests), board.callback(i));
    }
    board.wait_counting_threads();
  });
  int answered = 0, rejected = 0;
  for (int i = 0; i < kRequests; ++i) {
    auto error = llm_error_of([&] {
      EXPECT_EQ(board.text(i), expected_member_answer("q", i, kRequests));
      ++answered;
    });
    if (!error) continue;
    ++rejected;
    EXPECT_EQ(error->kind(), llm::failure::http_status) << error->what();
    EXPECT_EQ(error->status(), 429);
    EXPECT_EQ(std::string(error->what()), "llm request to " + server_->limited_url() +
                                              " failed with HTTP 429: Rate limit reached for "
                                              "requests.");
  }
  EXPECT_EQ(answered + rejected, kRequests);
  EXPECT_GT(rejected, 0);
  EXPECT_GE(answered, 1);
  // nodelay lets the first request and the burst through at once, then one every 1/rate s.
  const int most = 1 + llm::limited_burst +
                   static_cast<int>(std::ceil(ms / 1000.0 * llm::limited_rate_per_second));
  EXPECT_LE(answered, most);

  int logged_200 = 0, logged_429 = 0;
  for (const llm::access_entry& e : server_->access_log()) {
    if (e.uri != llm::local_server::limited_path) continue;
    logged_200 += e.status == 200 ? 1 : 0;
    logged_429 += e.status == 429 ? 1 : 0;
  }
  EXPECT_EQ(logged_200, answered);
  EXPECT_EQ(logged_429, rejected);
  std::printf("%d requests at once in %.1f ms: %d answered (at most %d), %d rejected with 429\n",
              kRequests, ms, answered, most, rejected);
}

TEST_F(RateLimitTest, RequestsUnderTheRateAreAllAnswered) {
  // Three quarters of the rate, for twice the burst: past what the burst alone would let in.
  constexpr int kRequests = 2 * (llm::limited_burst + 1);
  const auto every = std::chrono::microseconds(1'000'000) * 4 / (3 * llm::limited_rate_per_second);
  llm::client api(options());
  const auto started = std::chrono::steady_clock::now();
  for (int i = 0; i < kRequests; ++i) {
    std::this_thread::sleep_until(started + i * every);
    EXPECT_EQ(api.complete(server_->limited_url(), prompt(i, kRequests)),
              expected_member_answer("q", i, kRequests));
  }
}

}  // namespace
