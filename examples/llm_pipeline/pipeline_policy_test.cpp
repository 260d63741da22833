// SPDX-License-Identifier: MIT
// The pipeline's chat op under xcs's op options (llm::chat_policy), against the local nginx:
// its rate-limited endpoint (limit_req, 20 requests a second and a burst of 5, 429 beyond) with
// an xcs::rate_limiter of 18 a second on the chat op (no 429), without one (429s), and with
// xcs::retry on 429 instead (every request answered); and xcs::timeout on requests to the
// endpoint that never answers (xcs::timeout_error, and a 499 at nginx for each).
//
// The rate tests send 60 requests in one jitted call by default (3 s at 18 a second), to keep
// the suite fast; XCS_LLM_POLICY_REQUESTS=200 runs the measurement of the README (about 11 s
// at 18 a second).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "async_client.hpp"
#include "llm_client.hpp"
#include "local_server.hpp"
#include "pipeline.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using namespace llm_test;
using steady = std::chrono::steady_clock;

const std::string kQuestion = "q";

/// The rate tests' requests in one call: XCS_LLM_POLICY_REQUESTS, or 60.
int rate_test_requests() {
  const char* env = std::getenv("XCS_LLM_POLICY_REQUESTS");
  const int n = env != nullptr ? std::atoi(env) : 0;
  return n > 0 ? n : 60;
}

/// The ensemble step alone, with as many members as the ops have: that many requests at once,
/// all independent, each answered with its member's line.
struct ensemble_stage {
  const llm::pipeline_ops* ops;

  template <class Question>
  auto operator()(const Question& question) const {
    std::vector<int> members(static_cast<std::size_t>(ops->members));
    for (int m = 0; m < ops->members; ++m) members[static_cast<std::size_t>(m)] = m;
    return xcs::map([&](int m) { return ops->chat(ops->ask_prompt(question, m)); }, members);
  }
};

/// The chat op's figures in a jitted function's stats.
xcs::op_stats chat_stats(const xcs::stats& s) {
  for (const xcs::op_stats& op : s.ops) {
    if (op.name == "llm") return op;
  }
  ADD_FAILURE() << "no op named llm in the stats";
  return {};
}

class PipelinePolicyTest : public AsyncServerTest, public ::testing::WithParamInterface<op_kind> {
 protected:
  /// How many requests to `uri` nginx logged with each status, once it has logged `n` (or
  /// after `within`): nginx writes a request's line after its reply, so the last may lag.
  std::map<int, int> await_statuses(std::string_view uri, int n,
                                    std::chrono::milliseconds within = 2s) const {
    const steady::time_point give_up = steady::now() + within;
    for (;;) {
      std::map<int, int> statuses;
      int logged = 0;
      for (const llm::access_entry& e : server_->access_log()) {
        if (e.uri != uri) continue;
        ++statuses[e.status];
        ++logged;
      }
      if (logged >= n || steady::now() >= give_up) return statuses;
      std::this_thread::sleep_for(2ms);
    }
  }

  /// There are `n` answers, each its member's.
  static void expect_all_answered(const std::vector<std::string>& answers, int n) {
    ASSERT_EQ(answers.size(), static_cast<std::size_t>(n));
    int right = 0;
    for (int i = 0; i < n; ++i) {
      right += answers[static_cast<std::size_t>(i)] == expected_member_answer(kQuestion, i, n);
    }
    EXPECT_EQ(right, n) << "answers that are their member's";
  }
};

// Under nginx's 20 a second, with bursts of 5 at both ends: no request is rejected, and every
// member gets its own answer. The limiter, not the server, sets the pace: the call takes at
// least the time the tokens beyond the first 3 take to come. The limiter's burst (3) is below
// the server's (5): requests the client's threads send late bunch up at the server, and the
// margin keeps a loaded machine's bunching under nginx's burst.
TEST_P(PipelinePolicyTest, RateLimiterUnderTheServersLimitGetsNo429) {
  const int n = rate_test_requests();
  llm::timeline log;
  llm::chat_policy policy;
  policy.rate = xcs::rate_limiter(18, 3);
  ops_at limited(options_at(server_->limited_url()), log, GetParam(), n, policy);
  auto stage = xcs::jit(ensemble_stage{&limited.ops});
  std::vector<std::string> answers;
  const double ms = millis([&] { answers = stage(kQuestion); });
  expect_all_answered(answers, n);

  std::map<int, int> statuses = await_statuses(llm::local_server::limited_path, n);
  EXPECT_EQ(statuses.size(), 1u) << "statuses other than 200";  // before [] adds any
  EXPECT_EQ(statuses[200], n);
  EXPECT_EQ(statuses[429], 0);
  const xcs::op_stats chat = chat_stats(stage.stats());
  EXPECT_EQ(chat.retries, 0u);
  EXPECT_GT(chat.rate_wait_ns, 0u);
  const double paced_ms = (n - 3) * 1000.0 / 18;
  EXPECT_GE(ms, paced_ms * 0.95);
  RecordProperty("call_ms", std::to_string(ms));
  std::printf(
      "%d requests, rate_limiter(18, 3): %.1f ms (the tokens alone: %.1f ms); nginx answered "
      "%d, rejected %d; %.1f s waited for tokens, summed over requests\n",
      n, ms, paced_ms, statuses[200], statuses[429], static_cast<double>(chat.rate_wait_ns) / 1e9);
}

// The same requests without a limiter: nginx rejects those beyond its burst and rate. The
// first 429 fails the call (fail fast): the requests still running were asked to stop.
TEST_P(PipelinePolicyTest, WithoutALimiterTheServerRejectsSome) {
  const int n = rate_test_requests();
  llm::timeline log;
  ops_at limited(options_at(server_->limited_url()), log, GetParam(), n, llm::chat_policy{});
  auto stage = xcs::jit(ensemble_stage{&limited.ops});
  std::optional<llm::llm_error> error;
  const double ms = millis([&] { error = llm_error_of([&] { stage(kQuestion); }); });
  ASSERT_TRUE(error.has_value()) << "every request was answered";
  EXPECT_EQ(error->kind(), llm::failure::http_status) << error->what();
  EXPECT_EQ(error->status(), 429);

  // The call waited for the requests it asked to stop, so each one that reached nginx is done.
  const int sent = static_cast<int>(limited.requests());
  std::map<int, int> statuses = await_statuses(llm::local_server::limited_path, sent, 500ms);
  EXPECT_GE(statuses[429], 1);
  EXPECT_GE(statuses[200], 1);
  EXPECT_LE(statuses[200] + statuses[429] + statuses[499], sent);
  RecordProperty("rejected", std::to_string(statuses[429]));
  std::printf(
      "%d requests, no limiter: the call threw HTTP 429 after %.1f ms; %d requests sent, nginx "
      "answered %d, rejected %d with 429, logged 499 for %d\n",
      n, ms, sent, statuses[200], statuses[429], statuses[499]);
}

// No limiter, but xcs::retry on 429 (llm::transient), with backoffs from 100 ms: every request
// is answered in the end, each retry after a 429.
TEST_P(PipelinePolicyTest, RetryOn429AnswersEveryRequest) {
  const int n = rate_test_requests();
  llm::timeline log;
  llm::chat_policy policy;
  policy.max_attempts = 30;
  policy.first_backoff = 100ms;
  ops_at limited(options_at(server_->limited_url()), log, GetParam(), n, policy);
  auto stage = xcs::jit(ensemble_stage{&limited.ops});
  std::vector<std::string> answers;
  const double ms = millis([&] { answers = stage(kQuestion); });
  expect_all_answered(answers, n);

  const xcs::op_stats chat = chat_stats(stage.stats());
  const int attempts = static_cast<int>(limited.requests());
  std::map<int, int> statuses = await_statuses(llm::local_server::limited_path, attempts);
  EXPECT_GT(chat.retries, 0u);
  EXPECT_EQ(chat.errors, 0u);
  EXPECT_EQ(statuses[200], n);
  EXPECT_EQ(static_cast<std::uint64_t>(statuses[429]), chat.retries) << "a retry for each 429";
  EXPECT_EQ(attempts, n + statuses[429]);
  // nginx lets through its burst and then 20 a second, whatever the client does.
  EXPECT_GE(ms, (n - 6) * 1000.0 / 20 * 0.95);
  RecordProperty("call_ms", std::to_string(ms));
  std::printf(
      "%d requests, no limiter, retry(30, 100ms) on 429: %.1f ms; %llu retries (%d requests in "
      "all), nginx answered %d, rejected %d\n",
      n, ms, static_cast<unsigned long long>(chat.retries), attempts, statuses[200], statuses[429]);
}

// Requests to the endpoint that never answers, each with xcs::timeout(200ms): the call fails
// with xcs::timeout_error about 200 ms after it was made. A timed-out attempt is asked to stop
// and left behind (the call does not wait for it): its request ends soon after, and nginx logs
// 499 for it. Not retried: llm::transient does not accept timeout_error.
TEST_P(PipelinePolicyTest, TimeoutEndsRequestsThatHang) {
  constexpr int kMembers = 4;
  constexpr auto kTimeout = 200ms;
  llm::timeline log;
  llm::chat_policy policy;
  policy.timeout = kTimeout;
  policy.max_attempts = 3;
  ops_at hung(options_at(server_->hung_url()), log, GetParam(), kMembers, policy);
  auto stage = xcs::jit(ensemble_stage{&hung.ops});
  std::optional<xcs::timeout_error> error;
  const auto started_wall = std::chrono::system_clock::now();
  const double ms =
      millis([&] { error = error_of<xcs::timeout_error>([&] { stage(kQuestion); }); });
  const steady::time_point returned = steady::now();
  ASSERT_TRUE(error.has_value()) << "no xcs::timeout_error";
  EXPECT_GE(ms, 200.0);
  EXPECT_LT(ms, 1000.0);

  // The clients and the timeline must outlive the requests left behind.
  std::optional<steady::time_point> ended = await_recorded(log, "ensemble", kMembers, 2s);
  if (!ended) {
    ADD_FAILURE() << log.count("ensemble") << " of " << kMembers << " requests ended";
    await_recorded(log, "ensemble", kMembers, std::chrono::milliseconds(options().timeout_ms));
    return;
  }
  EXPECT_EQ(hung.requests(), static_cast<std::uint64_t>(kMembers)) << "no retry";
  std::map<int, int> statuses = await_statuses(llm::local_server::hung_path, kMembers);
  EXPECT_EQ(statuses[499], kMembers);
  // When nginx logged them, on its clock (whole milliseconds) from when the call was made.
  std::int64_t last_499_ms = 0;
  for (const llm::access_entry& e : server_->access_log()) {
    if (e.uri == llm::local_server::hung_path && e.status == 499) {
      last_499_ms = std::max(last_499_ms, e.end_ms - wall_ms(started_wall));
    }
  }
  EXPECT_LT(last_499_ms, 1000);
  const xcs::op_stats chat = chat_stats(stage.stats());
  EXPECT_GE(chat.timeouts, 1u);
  EXPECT_EQ(chat.retries, 0u);
  RecordProperty("call_ms", std::to_string(ms));
  std::printf(
      "%d requests that hang, timeout(200ms): the call threw timeout_error after %.1f ms (\"%s\"); "
      "%llu timed out (the first failure stopped the rest); all had ended %.1f ms after the "
      "call returned; nginx logged 499 for %d, the last %lld ms after the call was made\n",
      kMembers, ms, error->what(), static_cast<unsigned long long>(chat.timeouts),
      std::chrono::duration<double, std::milli>(*ended - returned).count(), statuses[499],
      static_cast<long long>(last_499_ms));
}

INSTANTIATE_TEST_SUITE_P(Ops, PipelinePolicyTest,
                         ::testing::Values(op_kind::blocking, op_kind::async), op_kind_name);

}  // namespace
