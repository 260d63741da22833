// SPDX-License-Identifier: MIT
// The LLM pipeline over real HTTP against a local nginx: answers, ensemble speedup, per-op
// concurrency bounds measured at the server, and failure paths, direct and jitted.
#include <curl/curl.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <barrier>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <regex>
#include <string>
#include <thread>
#include <vector>

#include "llm_client.hpp"
#include "local_server.hpp"
#include "pipeline.hpp"
#include "test_support.hpp"

namespace {

using namespace std::chrono_literals;
using namespace llm_test;

constexpr int kDelayMs = 200;  // how long the server takes per chat request

// Quotes, a backslash, a tab and non-ASCII letters: they must survive escaping on the way out
// and decoding on the way back.
const std::string kQuestion = "Why is the sky \"blue\" \\ not green?\tRéponds, s'il te plaît.";

/// Each test gets its own nginx on its own port, so tests may run in parallel.
class LlmHttpTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (std::string why = server_missing(); !why.empty()) GTEST_SKIP() << why;
    server_ = start_server(kDelayMs);
  }
  void TearDown() override {
    if (server_) stop_server(*server_);
  }

  llm::client make_client(long timeout_ms = 10000) const {
    llm::client_options o;
    o.url = server_->chat_url();
    o.timeout_ms = timeout_ms;
    return llm::client(o);
  }

  std::unique_ptr<llm::local_server> server_;
};

// --- (a) The pipeline and the example against the server -------------------------------

TEST_F(LlmHttpTest, PipelineAnswersAndEnsembleTakesAboutOneCallLatency) {
  const int members = 4;
  llm::client api = make_client();
  llm::timeline log;
  llm::pipeline_ops ops(api, log, members, 8);
  llm::ensemble_pipeline body{&ops};
  auto pipeline = xcs::jit(body);

  double one_call_ms = millis([&] { ops.llm(llm::member_prompt(kQuestion, 0, 1)); });
  EXPECT_GE(one_call_ms, kDelayMs * 0.95);

  llm::pipeline_result direct, jitted_first, jitted;
  log.clear();
  double direct_ms = millis([&] { direct = body(kQuestion); });
  double ensemble_direct_ms = log.span_ms("ensemble");
  log.clear();
  double first_ms = millis([&] { jitted_first = pipeline(kQuestion); });
  log.clear();
  double jitted_ms = millis([&] { jitted = pipeline(kQuestion); });
  double ensemble_jitted_ms = log.span_ms("ensemble");

  // The answers the fake model gives, decoded from its JSON.
  const auto& [answers, verdict, final_answer] = direct;
  ASSERT_EQ(answers.size(), static_cast<std::size_t>(members));
  for (int m = 0; m < members; ++m) {
    EXPECT_EQ(answers[m], expected_member_answer(kQuestion, m, members));
  }
  EXPECT_EQ(verdict, kExpectedVerdict);
  EXPECT_EQ(final_answer, expected_final(kQuestion));
  EXPECT_EQ(jitted_first, direct);
  EXPECT_EQ(jitted, direct);

  // The ensemble: about one request's latency jitted, N of them direct.
  EXPECT_LT(ensemble_jitted_ms, 2 * one_call_ms);
  EXPECT_GE(ensemble_direct_ms, members * kDelayMs * 0.95);
  EXPECT_LT(jitted_ms, direct_ms * 0.75);
  EXPECT_EQ(log.count("ensemble"), static_cast<std::size_t>(members));

  xcs::stats s = pipeline.stats();
  EXPECT_EQ(s.traces, 1u);
  EXPECT_EQ(s.fallback_calls, 0u);
  EXPECT_EQ(s.max_parallelism, static_cast<std::size_t>(members));

  // The server saw every request, and the jitted ensemble's four at once.
  std::vector<llm::access_entry> served = server_->access_log();
  int chats = 0;
  for (const auto& e : served) chats += e.uri == "/v1/chat/completions" ? 1 : 0;
  EXPECT_EQ(chats, 1 + 3 * (members + 2));
  EXPECT_EQ(llm::max_overlap(served, "/v1/chat/completions"), members);

  std::printf(
      "one request %.1f ms; direct %.1f ms (ensemble %.1f ms); jitted first %.1f ms, cached "
      "%.1f ms (ensemble %.1f ms)\n",
      one_call_ms, direct_ms, ensemble_direct_ms, first_ms, jitted_ms, ensemble_jitted_ms);
}

TEST_F(LlmHttpTest, ExampleRunsTheEnsembleAgainstTheServer) {
  process_result r = run_process({XCS_LLM_PIPELINE_EXE, "--url", server_->chat_url(), "--n", "4",
                                  "--question", kQuestion, "--timeout-ms", "5000"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (int m = 0; m < 4; ++m) {
    EXPECT_NE(r.output.find("answer " + std::to_string(m) + ": " +
                            expected_member_answer(kQuestion, m, 4)),
              std::string::npos)
        << r.output;
  }
  EXPECT_NE(r.output.find("judge:    " + kExpectedVerdict), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("final:    " + expected_final(kQuestion)), std::string::npos) << r.output;

  auto summary = parse_summary(r.output);
  ASSERT_FALSE(summary.empty()) << r.output;
  EXPECT_EQ(summary["mode"], "single");
  EXPECT_EQ(summary["client"], "async");  // the default
  EXPECT_EQ(summary["same"], "yes");
  double one_call_ms = std::stod(summary["one_call_ms"]);
  EXPECT_LT(std::stod(summary["ensemble_jitted_ms"]), 2 * one_call_ms) << r.output;
  EXPECT_GE(std::stod(summary["ensemble_direct_ms"]), 4 * kDelayMs * 0.95) << r.output;
  EXPECT_LT(std::stod(summary["jitted_ms"]), std::stod(summary["direct_ms"]) * 0.75) << r.output;
  EXPECT_EQ(summary["peak_in_flight"], "4") << r.output;
}

TEST_F(LlmHttpTest, ExampleBatchModeTakesTheUrlFromTheEnvironment) {
  const std::vector<std::string> questions = {"What is a monad?", "¿Por qué el cielo es azul?"};
  std::filesystem::path file = server_->prefix() / "questions.txt";
  {
    std::ofstream out(file);
    for (const auto& q : questions) out << q << "\n\n";  // blank lines are skipped
  }
  process_result r = run_process(
      {XCS_LLM_PIPELINE_EXE, "--batch", file.string(), "--n", "3", "--client", "blocking"},
      {"XCS_LLM_URL=" + server_->chat_url()});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  for (const auto& q : questions) {
    EXPECT_NE(r.output.find("question: " + q + "\n"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("answer 2: " + expected_member_answer(q, 2, 3)), std::string::npos)
        << r.output;
    EXPECT_NE(r.output.find("final:    " + expected_final(q)), std::string::npos) << r.output;
  }
  auto summary = parse_summary(r.output);
  EXPECT_EQ(summary["mode"], "batch");
  EXPECT_EQ(summary["client"], "blocking");
  EXPECT_EQ(summary["questions"], "2");
  EXPECT_EQ(summary["same"], "yes");
  // Direct: 2 x (3 + 2) requests in a row; jitted: three stages.
  EXPECT_LT(std::stod(summary["jitted_ms"]), std::stod(summary["direct_ms"]) / 2) << r.output;
  EXPECT_EQ(summary["peak_in_flight"], "6") << r.output;  // both ensembles at once
}

// The chat op's policy flags against nginx's rate-limited endpoint (20 a second, bursts of 5;
// 429 beyond; instant replies): --rate 18 keeps every request under the limit; without it,
// --retries sends the rejected requests again until they are answered. Each run sends 37
// requests: one alone, then the batch directly and jitted twice.
TEST_F(LlmHttpTest, ExampleTakesRateAndRetryFlags) {
  auto rejected = [&] {
    int n = 0;
    for (const llm::access_entry& e : server_->access_log()) {
      n += e.uri == llm::local_server::limited_path && e.status == 429 ? 1 : 0;
    }
    return n;
  };
  const std::vector<std::string> batch = {XCS_LLM_PIPELINE_EXE,
                                          "--url",
                                          server_->limited_url(),
                                          "--n",
                                          "2",
                                          "--questions",
                                          "a?",
                                          "b?",
                                          "c?"};
  auto with = [&](std::vector<std::string> flags) {
    flags.insert(flags.begin(), batch.begin(), batch.end());
    return flags;
  };

  process_result r = run_process(with({"--rate", "18"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto summary = parse_summary(r.output);
  EXPECT_EQ(summary["same"], "yes") << r.output;
  EXPECT_EQ(summary["retries"], "0") << r.output;
  EXPECT_GT(std::stod(summary["rate_wait_ms"]), 0) << r.output;
  EXPECT_NE(r.output.find("rate limit 18 a second, bursts of 5"), std::string::npos) << r.output;
  EXPECT_EQ(rejected(), 0);

  r = run_process(with({"--retries", "30", "--backoff-ms", "50"}));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  summary = parse_summary(r.output);
  EXPECT_EQ(summary["same"], "yes") << r.output;
  EXPECT_GT(std::stoi(summary["retries"]), 0) << r.output;
  EXPECT_GT(rejected(), 0);
}

TEST_F(LlmHttpTest, ExampleRejectsBadArgumentsAndAMissingEndpoint) {
  process_result r = run_process({XCS_LLM_PIPELINE_EXE, "--url", server_->chat_url(), "--n", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--n expects an integer >= 1, not '0'"), std::string::npos) << r.output;
  r = run_process({XCS_LLM_PIPELINE_EXE, "--url", server_->chat_url(), "--client", "fast"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--client expects async or blocking, not 'fast'"), std::string::npos)
      << r.output;
  r = run_process({XCS_LLM_PIPELINE_EXE});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("no endpoint"), std::string::npos) << r.output;
  r = run_process({XCS_LLM_PIPELINE_EXE, "--url", server_->chat_url(), "--rate", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--rate expects a number above 0, not '0'"), std::string::npos)
      << r.output;
  r = run_process({XCS_LLM_PIPELINE_EXE, "--url", server_->chat_url(), "--limited"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--limited needs --local-server"), std::string::npos) << r.output;
  // A request that fails ends the example with the error's kind and message.
  r = run_process(
      {XCS_LLM_PIPELINE_EXE, "--url", server_->url("/v1/fail500/chat/completions"), "--n", "2"});
  EXPECT_EQ(r.exit_code, 3);
  EXPECT_NE(r.output.find("http_status error: llm request to " +
                          server_->url("/v1/fail500/chat/completions") + " failed with HTTP 500"),
            std::string::npos)
      << r.output;
}

// --- (b) Per-op concurrency bound, measured at the server -------------------------------

// Eight independent requests; each prompt gets its own member number.
std::vector<std::string> eight_prompts(int first = 0) {
  std::vector<std::string> prompts;
  for (int i = 0; i < 8; ++i) prompts.push_back(llm::member_prompt("q", first + i, 99).prompt);
  return prompts;
}

TEST_F(LlmHttpTest, WithoutBoundServerSeesAllRequestsAtOnce) {
  // The control for the next tests: the measurements do see more than two when there are.
  llm::client api = make_client();
  auto llm = xcs::op(
      "llm", [&api](const std::string& prompt) { return api.complete(prompt); }, xcs::blocking);
  auto fan_out = xcs::jit(all_requests(llm));
  status_sampler sampler(server_->url("/nginx_status"));
  std::vector<std::string> replies = fan_out(eight_prompts());
  sampler.stop();
  ASSERT_EQ(replies.size(), 8u);
  EXPECT_EQ(replies[7], expected_member_answer("q", 7, 99));
  EXPECT_EQ(llm::max_overlap(server_->access_log(), "/v1/chat/completions"), 8);
  EXPECT_EQ(api.peak_in_flight(), 8);
  EXPECT_GE(sampler.max_requests(), 6) << sampler.samples() << " samples";
}

TEST_F(LlmHttpTest, MaxConcurrencyBoundsRequestsAtTheServer) {
  llm::client api = make_client();
  auto llm = xcs::op(
      "llm", [&api](const std::string& prompt) { return api.complete(prompt); }, xcs::blocking,
      xcs::max_concurrency(2));
  auto fan_out = xcs::jit(all_requests(llm));

  status_sampler sampler(server_->url("/nginx_status"));
  std::vector<std::string> replies;
  double ms = millis([&] { replies = fan_out(eight_prompts()); });
  sampler.stop();

  ASSERT_EQ(replies.size(), 8u);
  for (int i = 0; i < 8; ++i) EXPECT_EQ(replies[i], expected_member_answer("q", i, 99));
  EXPECT_EQ(fan_out.stats().fallback_calls, 0u);
  EXPECT_EQ(fan_out.stats().max_parallelism, 8u);
  expect_two_at_a_time(*server_, sampler, api, llm, ms, kDelayMs, "8 requests, one function");
}

TEST_F(LlmHttpTest, MaxConcurrencyHoldsAcrossJittedFunctionsOnTwoThreads) {
  llm::client api = make_client();
  auto llm = xcs::op(
      "llm", [&api](const std::string& prompt) { return api.complete(prompt); }, xcs::blocking,
      xcs::max_concurrency(2));
  // Two different jitted functions, each with four independent requests, sharing the op.
  auto first_four = xcs::jit(
      [llm](const auto& p) { return std::make_tuple(llm(p[0]), llm(p[1]), llm(p[2]), llm(p[3])); });
  auto last_four = xcs::jit(all_requests(llm));
  std::vector<std::string> prompts = eight_prompts();
  std::vector<std::string> head(prompts.begin(), prompts.begin() + 4);
  std::vector<std::string> tail(prompts.begin() + 4, prompts.end());

  status_sampler sampler(server_->url("/nginx_status"));
  std::barrier start(2);
  std::tuple<std::string, std::string, std::string, std::string> a;
  std::vector<std::string> b;
  double ms = millis([&] {
    std::thread t1([&] {
      start.arrive_and_wait();
      a = first_four(head);
    });
    std::thread t2([&] {
      start.arrive_and_wait();
      b = last_four(tail);
    });
    t1.join();
    t2.join();
  });
  sampler.stop();

  EXPECT_EQ(std::get<3>(a), expected_member_answer("q", 3, 99));
  ASSERT_EQ(b.size(), 4u);
  EXPECT_EQ(b[3], expected_member_answer("q", 7, 99));
  EXPECT_EQ(first_four.stats().fallback_calls, 0u);
  EXPECT_EQ(last_four.stats().fallback_calls, 0u);
  expect_two_at_a_time(*server_, sampler, api, llm, ms, kDelayMs,
                       "2 x 4 requests, two functions on two threads");
}

// --- (c) Failure paths: the jitted call throws what the direct call throws ---------------

// A good request first in program order, then `bad`: the direct call throws when it reaches
// `bad`; the jitted call runs both at once and must surface the same exception.
auto good_then_bad(const llm::client& api) {
  auto ask = xcs::op(
      "ask",
      [&api](const std::string& url, const std::string& prompt) {
        return api.complete(url, prompt);
      },
      xcs::blocking);
  return [ask](const auto& good_url, const auto& bad_url, const auto& prompt) {
    auto good = ask(good_url, prompt);
    auto bad = ask(bad_url, prompt);
    return std::make_tuple(good, bad);
  };
}

TEST_F(LlmHttpTest, ServerErrorsThrowTheSameFromDirectAndJittedCalls) {
  llm::client api = make_client();
  auto body = good_then_bad(api);
  auto pipeline = xcs::jit(body);
  const std::string prompt = llm::member_prompt("q", 0, 1).prompt;
  const std::string ok = server_->chat_url();

  for (auto [path, status, says] :
       {std::tuple{"/v1/fail500/chat/completions", 500L,
                   "The server had an error while processing your request."},
        std::tuple{"/v1/fail429/chat/completions", 429L, "Rate limit reached for requests."}}) {
    const std::string bad = server_->url(path);
    auto direct = llm_error_of([&] { body(ok, bad, prompt); });
    auto jitted = llm_error_of([&] { pipeline(ok, bad, prompt); });
    expect_same_error(direct, jitted);
    ASSERT_TRUE(direct.has_value());
    EXPECT_EQ(direct->kind(), llm::failure::http_status);
    EXPECT_EQ(direct->status(), status);
    EXPECT_EQ(std::string(direct->what()), "llm request to " + bad + " failed with HTTP " +
                                               std::to_string(status) + ": " + says);
  }
  EXPECT_EQ(pipeline.stats().fallback_calls, 0u);
  EXPECT_EQ(pipeline.stats().traces, 1u);
}

TEST_F(LlmHttpTest, TimeoutThrowsTheSameFromDirectAndJittedCalls) {
  llm::client api = make_client(/*timeout_ms=*/300);
  auto body = good_then_bad(api);
  auto pipeline = xcs::jit(body);
  const std::string prompt = llm::member_prompt("q", 0, 1).prompt;
  const std::string slow = server_->url("/v1/slow/chat/completions");

  std::optional<llm::llm_error> direct, jitted;
  double direct_ms =
      millis([&] { direct = llm_error_of([&] { body(server_->chat_url(), slow, prompt); }); });
  double jitted_ms =
      millis([&] { jitted = llm_error_of([&] { pipeline(server_->chat_url(), slow, prompt); }); });
  expect_same_error(direct, jitted);
  ASSERT_TRUE(direct.has_value());
  EXPECT_EQ(direct->kind(), llm::failure::timeout);
  EXPECT_EQ(std::string(direct->what()), "llm request to " + slow + " timed out after 300 ms");
  // The good request and the timeout: one after the other directly, side by side jitted; and
  // neither waits for the slow reply (3 s).
  EXPECT_GE(direct_ms, kDelayMs + 300 * 0.95);
  EXPECT_LT(direct_ms, 2000);
  EXPECT_LT(jitted_ms, direct_ms);
  EXPECT_EQ(pipeline.stats().fallback_calls, 0u);
}

TEST_F(LlmHttpTest, TransportErrorsAndBadResponsesThrowTheSameFromDirectAndJittedCalls) {
  llm::client api = make_client();
  auto body = good_then_bad(api);
  auto pipeline = xcs::jit(body);
  const std::string prompt = llm::member_prompt("q", 0, 1).prompt;
  const std::string ok = server_->chat_url();

  // Nothing listens there (it was free a moment ago).
  const std::string refused =
      "http://127.0.0.1:" + std::to_string(llm::pick_free_port()) + "/v1/chat/completions";
  auto direct = llm_error_of([&] { body(ok, refused, prompt); });
  auto jitted = llm_error_of([&] { pipeline(ok, refused, prompt); });
  expect_same_error(direct, jitted);
  ASSERT_TRUE(direct.has_value());
  EXPECT_EQ(direct->kind(), llm::failure::transport);
  EXPECT_NE(std::string(direct->what()).find("Couldn't connect to server"), std::string::npos)
      << direct->what();

  const std::string garbage = server_->url("/v1/garbage/chat/completions");
  direct = llm_error_of([&] { body(ok, garbage, prompt); });
  jitted = llm_error_of([&] { pipeline(ok, garbage, prompt); });
  expect_same_error(direct, jitted);
  ASSERT_TRUE(direct.has_value());
  EXPECT_EQ(direct->kind(), llm::failure::bad_response);
  EXPECT_EQ(direct->status(), 200);
  EXPECT_EQ(std::string(direct->what()),
            "llm request to " + garbage +
                ": the response has no choices[0].message.content string: this is not JSON");
}

TEST_F(LlmHttpTest, FailingEnsembleMemberFailsThePipelineAsDirectly) {
  // The whole pipeline against a server that fails every request: the first request in
  // program order (member 0) throws, and the jitted pipeline throws the same.
  llm::client_options o;
  o.url = server_->url("/v1/fail500/chat/completions");
  llm::client api(o);
  llm::timeline log;
  llm::pipeline_ops ops(api, log, 4, 8);
  llm::ensemble_pipeline body{&ops};
  auto pipeline = xcs::jit(body);
  auto direct = llm_error_of([&] { body(kQuestion); });
  auto jitted = llm_error_of([&] { pipeline(kQuestion); });
  expect_same_error(direct, jitted);
  // The judge and the synthesis never ran.
  EXPECT_EQ(log.count("judge"), 0u);
  EXPECT_EQ(log.count("synthesis"), 0u);
  EXPECT_EQ(pipeline.stats().fallback_calls, 0u);
}

}  // namespace
