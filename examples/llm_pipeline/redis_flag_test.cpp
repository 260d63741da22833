// SPDX-License-Identifier: MIT
// The example's --redis flag against a local nginx and a local redis-server: two processes
// share the answers (the second sends no request) and the rate-limit budget.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "local_redis.hpp"
#include "test_support.hpp"

namespace {

using namespace llm_test;

constexpr int kDelayMs = 50;

class LlmRedisTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = server_missing(); !why.empty()) GTEST_SKIP() << why;
    if (xcs_test::redis_server_path().empty()) {
      GTEST_SKIP() << "redis-server is not installed (Debian: redis-server; 'make deps' "
                      "installs it): the --redis test is skipped";
    }
    server_ = start_server(kDelayMs);
    redis_ = std::make_unique<xcs_test::local_redis>(std::filesystem::temp_directory_path() /
                                                     "xcs-llm-redis-test");
  }
  void TearDown() override {
    redis_.reset();
    if (server_) stop_server(*server_);
  }

  enum class rate { shared, none };
  /// The example with --redis, the shared limiter (--rate 50) or none, and `questions`.
  process_result run(const std::vector<std::string>& questions, rate r = rate::shared) const {
    std::vector<std::string> args{
        XCS_LLM_PIPELINE_EXE, "--url", server_->chat_url(), "--n", "3", "--redis", redis_->url()};
    if (r == rate::shared) args.insert(args.end(), {"--rate", "50"});
    args.push_back("--questions");
    args.insert(args.end(), questions.begin(), questions.end());
    return run_process(args);
  }

  std::unique_ptr<llm::local_server> server_;
  std::unique_ptr<xcs_test::local_redis> redis_;
};

TEST_F(LlmRedisTest, ASecondProcessGetsTheAnswersTheFirstComputed) {
  const std::vector<std::string> questions = {"What is a monad?", "Why is the sky blue?"};
  process_result first = run(questions);
  ASSERT_EQ(first.exit_code, 0) << first.output;
  auto summary = parse_summary(first.output);
  EXPECT_EQ(summary["mode"], "redis") << first.output;
  EXPECT_EQ(summary["computed"], "2") << first.output;
  EXPECT_EQ(summary["cached"], "0") << first.output;
  EXPECT_EQ(summary["requests"], "10") << first.output;  // (3 members + judge + synthesis) x 2
  EXPECT_NE(first.output.find("final:    " + expected_final(questions[1])), std::string::npos)
      << first.output;

  process_result second = run({questions[1], questions[0], "Is a third one new?"});
  ASSERT_EQ(second.exit_code, 0) << second.output;
  summary = parse_summary(second.output);
  EXPECT_EQ(summary["computed"], "1") << second.output;
  EXPECT_EQ(summary["cached"], "2") << second.output;
  EXPECT_EQ(summary["bypassed"], "0") << second.output;
  EXPECT_EQ(summary["requests"], "5") << second.output;
  EXPECT_NE(second.output.find("final:    " + expected_final(questions[0])), std::string::npos)
      << second.output;
  EXPECT_NE(second.output.find("rate limit 50 a second, bursts of 5 (shared in Redis)"),
            std::string::npos)
      << second.output;
}

TEST_F(LlmRedisTest, WithRedisDownTheCacheIsBypassedAndTheSharedLimiterFailsNamingTheUrl) {
  redis_->stop();
  // The cache alone: bypassed, the answers are computed, and stderr says so.
  process_result r = run({"What is a monad?"}, rate::none);
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto summary = parse_summary(r.output);
  EXPECT_EQ(summary["computed"], "1") << r.output;
  EXPECT_EQ(summary["bypassed"], "1") << r.output;
  EXPECT_NE(r.output.find("the cache is bypassed"), std::string::npos) << r.output;
  // With the shared limiter: a budget that cannot be checked is not spent; the error names the
  // URL, and the process ends.
  r = run({"What is a monad?"});
  EXPECT_NE(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find(redis_->url()), std::string::npos) << r.output;
}

}  // namespace
