// SPDX-License-Identifier: MIT
// The async client behind an xcs::async_op, against a local nginx: max_concurrency as the
// server sees it, the direct call's errors, and the pipeline on the async op. (1,000 requests
// in one call: burst_test.)
#include <algorithm>
#include <atomic>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "async_client.hpp"
#include "pipeline.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using namespace llm_test;

class AsyncOpTest : public AsyncServerTest {};

TEST_F(AsyncOpTest, MaxConcurrencyBoundsWhatTheServerSees) {
  llm::async_client api(options());
  auto llm = xcs::async_op("llm", chat_op(api), xcs::max_concurrency(2));
  auto fan_out = xcs::jit(all_requests(llm));

  status_sampler sampler(server_->url("/nginx_status"));
  std::vector<std::string> replies;
  double ms = millis([&] { replies = fan_out(prompts(8)); });
  sampler.stop();

  ASSERT_EQ(replies.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(replies[i], expected_member_answer("q", i, 8));
  expect_two_at_a_time(*server_, sampler, api, llm, ms, kAsyncDelayMs, "8 requests, async op");
}

TEST_F(AsyncOpTest, MaxConcurrencyHoldsUnderAThousandRequests) {
  llm::async_client api(options());
  auto llm = xcs::async_op("llm", chat_op(api), xcs::max_concurrency(100));
  auto fan_out = xcs::jit(all_requests(llm));
  std::vector<std::string> replies;
  double ms = millis([&] { replies = fan_out(prompts(kBurst)); });
  ASSERT_EQ(replies.size(), static_cast<std::size_t>(kBurst));
  EXPECT_EQ(replies[kBurst - 1], expected_member_answer("q", kBurst - 1, kBurst));
  int logged = llm::max_overlap(server_->access_log(), "/v1/chat/completions");
  EXPECT_LE(logged, 100);
  EXPECT_LE(api.peak_in_flight(), 100);
  EXPECT_EQ(llm.peak_concurrency(), 100u);
  EXPECT_GE(ms, 10 * kAsyncDelayMs * 0.95);  // ten rounds of 100
  std::printf("%d requests, async op, bound 100: %.1f ms; peak at the server %d (access log)\n",
              kBurst, ms, logged);
}

// A good request first in program order, then `bad`: the direct call throws when it reaches
// `bad`; the jitted call runs both at once and must surface the same exception.
template <class Op>
auto good_then_bad(const Op& ask) {
  return [ask](const auto& good_url, const auto& bad_url, const auto& prompt) {
    auto good = ask(good_url, prompt);
    auto bad = ask(bad_url, prompt);
    return std::make_tuple(good, bad);
  };
}

TEST_F(AsyncOpTest, FailuresReachTheCallerAsTheDirectCalls) {
  llm::client blocking(options(/*timeout_ms=*/300));
  llm::async_client api(options(/*timeout_ms=*/300));
  auto ask = xcs::async_op("ask", [&api](const std::string& url, const std::string& prompt,
                                         xcs::completion<std::string> done) {
    api.start(url, prompt, llm::completing(std::move(done)));
  });
  auto body = good_then_bad(ask);
  auto pipeline = xcs::jit(body);
  const std::string prompt = llm::member_prompt("q", 0, 1).prompt;
  const std::string ok = server_->chat_url();
  const std::string refused =
      "http://127.0.0.1:" + std::to_string(llm::pick_free_port()) + "/v1/chat/completions";

  for (const std::string& bad :
       {server_->url("/v1/fail500/chat/completions"), server_->url("/v1/fail429/chat/completions"),
        server_->url("/v1/slow/chat/completions"), server_->url("/v1/garbage/chat/completions"),
        refused}) {
    auto direct = llm_error_of([&] { body(ok, bad, prompt); });      // the async op, plainly
    auto jitted = llm_error_of([&] { pipeline(ok, bad, prompt); });  // and traced
    auto blocked = llm_error_of([&] { blocking.complete(bad, prompt); });
    expect_same_error(direct, jitted);
    expect_same_error(blocked, direct);
    ASSERT_TRUE(direct.has_value());
    std::printf("%s: %s\n", std::string(llm::to_string(direct->kind())).c_str(), direct->what());
  }
  EXPECT_EQ(pipeline.stats().fallback_calls, 0u);
  EXPECT_EQ(pipeline.stats().traces, 1u);
}

TEST_F(AsyncOpTest, PipelineOnTheAsyncOpAnswersAsOnTheBlockingOne) {
  const int members = 4;
  const std::string question = "Why is the sky \"blue\"?";
  llm::client blocking(options());
  llm::async_client api(options());
  llm::timeline log;
  llm::pipeline_ops on_lane(blocking, log, members, 8);
  llm::pipeline_ops on_events(blocking, log, members, 8, &api);
  ASSERT_TRUE(on_events.use_async);

  llm::pipeline_result expected = llm::ensemble_pipeline{&on_lane}(question);
  auto pipeline = xcs::jit(llm::ensemble_pipeline{&on_events});
  log.clear();
  double direct_ms =
      millis([&] { EXPECT_EQ(llm::ensemble_pipeline{&on_events}(question), expected); });
  log.clear();
  EXPECT_EQ(pipeline(question), expected);  // traces
  log.clear();
  double jitted_ms = millis([&] { EXPECT_EQ(pipeline(question), expected); });
  double ensemble_ms = log.span_ms("ensemble");

  EXPECT_EQ(std::get<1>(expected), kExpectedVerdict);
  EXPECT_EQ(std::get<2>(expected), expected_final(question));
  EXPECT_GE(direct_ms, (members + 2) * kAsyncDelayMs * 0.95);
  EXPECT_LT(ensemble_ms, 2 * kAsyncDelayMs);
  EXPECT_LT(jitted_ms, direct_ms * 0.75);
  EXPECT_EQ(pipeline.stats().fallback_calls, 0u);
  EXPECT_EQ(api.peak_in_flight(), members);
  EXPECT_EQ(blocking.requests(), static_cast<std::uint64_t>(members + 2));  // on_lane's only
}

}  // namespace
