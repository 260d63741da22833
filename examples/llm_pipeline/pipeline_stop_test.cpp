// SPDX-License-Identifier: MIT
// The pipeline under xcs's bounds, on the blocking op and on the async op: a jitted call whose
// requests never get an answer ends at its deadline with xcs::deadline_exceeded, or at its
// stop with xcs::cancelled, and the requests it left behind end soon after (nginx logs 499 for
// each); an ensemble member whose request fails stops the others' requests (fail fast).
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <optional>
#include <stop_token>
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

constexpr int kMembers = 4;
constexpr std::uint32_t kBound = 8;  // the chat ops' max_concurrency
const std::string kQuestion = "q";

// The bound of the issue is the deadline plus 10 ms; the tests allow a loaded 2-core machine
// (where other builds run) more, and print what they measured.
// Under sanitizers on a loaded machine the requests once had not started 200 ms in (none
// reached nginx): long enough there for them to be under way when the call is stopped.
constexpr auto kDeadline = kCheckTimes ? 200ms : 1000ms;
// Sanitizers: one stopped call took 262 ms under TSan at load 12; the hung requests take 10 s.
constexpr double kSlackMs = kCheckTimes ? 150 : 600;

double ms_between(steady::time_point from, steady::time_point to) {
  return std::chrono::duration<double, std::milli>(to - from).count();
}

/// The ensemble step of ensemble_pipeline, with member 0 asking through `first` and the other
/// members through `rest`: the direct call throws member 0's error before the others start.
struct split_ensemble {
  const llm::pipeline_ops* first;
  const llm::pipeline_ops* rest;

  template <class Question>
  auto operator()(const Question& question) const {
    std::vector<int> members(kMembers);
    for (int m = 0; m < kMembers; ++m) members[static_cast<std::size_t>(m)] = m;
    return xcs::map(
        [&](int m) {
          const llm::pipeline_ops& ops = m == 0 ? *first : *rest;
          return ops.chat(ops.ask_prompt(question, m));
        },
        members);
  }
};

class PipelineStopTest : public AsyncServerTest, public ::testing::WithParamInterface<op_kind> {
 protected:
  /// nginx's 499s for the hung endpoint: once `n` have been logged (or after `within`), how
  /// many.
  int await_abandoned(int n, std::chrono::milliseconds within = 2s) const {
    const steady::time_point give_up = steady::now() + within;
    for (;;) {
      const auto log = server_->access_log();
      const int abandoned = static_cast<int>(std::count_if(log.begin(), log.end(), [](auto& e) {
        return e.uri == llm::local_server::hung_path && e.status == 499;
      }));
      if (abandoned >= n || steady::now() >= give_up) return abandoned;
      std::this_thread::sleep_for(2ms);
    }
  }

  /// The requests of a bounded call that was stopped at `stopped` (its deadline, or the stop
  /// on its token; on the wall clock, nginx's) and returned at `ended`, all to the hung
  /// endpoint: they end soon after, each closing its connection (a 499 at nginx), and no later
  /// step started. Prints how soon.
  void expect_left_behind_requests_end(const llm::timeline& log, steady::time_point ended,
                                       std::chrono::system_clock::time_point stopped) const {
    std::optional<steady::time_point> all_ended = await_recorded(log, "ensemble", kMembers, 2s);
    if (!all_ended) {
      ADD_FAILURE() << log.count("ensemble") << " of " << kMembers << " requests ended";
      // The clients' timeout ends them: until then the test's clients and timeline must live.
      await_recorded(log, "ensemble", kMembers, std::chrono::milliseconds(options().timeout_ms));
      return;
    }
    const double after_ms = ms_between(ended, *all_ended);
    EXPECT_LT(after_ms, kSlackMs);
    EXPECT_EQ(log.count("judge"), 0u);
    ASSERT_EQ(await_abandoned(kMembers), kMembers);
    // When nginx logged them, on its ms clock: after the stop (1 ms for the clocks' rounding).
    std::int64_t first = INT64_MAX, last = INT64_MIN;
    for (const llm::access_entry& e : server_->access_log()) {
      if (e.uri != llm::local_server::hung_path) continue;
      first = std::min(first, e.end_ms - wall_ms(stopped));
      last = std::max(last, e.end_ms - wall_ms(stopped));
    }
    EXPECT_GE(first, -1);
    EXPECT_LT(static_cast<double>(last), kSlackMs);
    std::printf(
        "its %d requests had ended %.1f ms after it returned; nginx logged 499 for each, %lld "
        "to %lld ms after the stop\n",
        kMembers, after_ms, static_cast<long long>(first), static_cast<long long>(last));
  }
};

TEST_P(PipelineStopTest, DeadlineEndsACallWhoseRequestsHang) {
  llm::timeline log;
  ops_at hung(options_at(server_->hung_url()), log, GetParam(), kMembers, kBound);
  auto pipeline = xcs::jit(llm::ensemble_pipeline{&hung.ops});
  const auto started_wall = std::chrono::system_clock::now();
  const steady::time_point started = steady::now();
  auto error =
      error_of<xcs::deadline_exceeded>([&] { pipeline.with_deadline(kDeadline)(kQuestion); });
  const steady::time_point ended = steady::now();
  ASSERT_TRUE(error.has_value()) << "no xcs::deadline_exceeded";
  const double ms = ms_between(started, ended);
  const double deadline_ms = std::chrono::duration<double, std::milli>(kDeadline).count();
  EXPECT_GE(ms, deadline_ms);
  EXPECT_LT(ms, deadline_ms + kSlackMs);
  RecordProperty("call_ms", std::to_string(ms));
  std::printf("deadline %.0f ms: the call threw deadline_exceeded after %.1f ms\n", deadline_ms,
              ms);
  EXPECT_EQ(pipeline.stats().deadline_exceeded_calls, 1u);
  expect_left_behind_requests_end(log, ended, started_wall + kDeadline);
}

TEST_P(PipelineStopTest, StopTokenCancelsACallWhoseRequestsHang) {
  llm::timeline log;
  ops_at hung(options_at(server_->hung_url()), log, GetParam(), kMembers, kBound);
  auto pipeline = xcs::jit(llm::ensemble_pipeline{&hung.ops});
  std::stop_source source;
  steady::time_point stopped;
  std::chrono::system_clock::time_point stopped_wall;
  const steady::time_point started = steady::now();
  std::thread stopper([&] {
    std::this_thread::sleep_until(started + kDeadline);
    stopped = steady::now();
    stopped_wall = std::chrono::system_clock::now();
    source.request_stop();
  });
  auto error =
      error_of<xcs::cancelled>([&] { pipeline.with_stop_token(source.get_token())(kQuestion); });
  const steady::time_point ended = steady::now();
  stopper.join();
  ASSERT_TRUE(error.has_value()) << "no xcs::cancelled";
  const double after_stop_ms = ms_between(stopped, ended);
  EXPECT_GE(after_stop_ms, 0);
  EXPECT_LT(after_stop_ms, kSlackMs);
  RecordProperty("after_stop_ms", std::to_string(after_stop_ms));
  std::printf("stopped after %.1f ms: the call threw cancelled %.1f ms after the stop\n",
              ms_between(started, stopped), after_stop_ms);
  EXPECT_EQ(pipeline.stats().cancelled_calls, 1u);
  expect_left_behind_requests_end(log, ended, stopped_wall);
}

// Member 0's request fails after kAsyncDelayMs, while the others' are in flight to the hung
// endpoint: the call throws member 0's error, and the others were asked to stop.
TEST_P(PipelineStopTest, FailingMemberStopsTheOthers) {
  llm::timeline log;
  ops_at failing(options_at(server_->url("/v1/late500/chat/completions")), log, GetParam(),
                 kMembers, kBound);
  ops_at hung(options_at(server_->hung_url()), log, GetParam(), kMembers, kBound);
  const split_ensemble body{&failing.ops, &hung.ops};
  // The direct call: member 0's error, and the others never start.
  auto direct = llm_error_of([&] { body(kQuestion); });
  ASSERT_EQ(hung.requests(), 0u);

  auto ensemble = xcs::jit(body);
  std::optional<llm::llm_error> jitted;
  const double ms = millis([&] { jitted = llm_error_of([&] { ensemble(kQuestion); }); });
  expect_same_error(direct, jitted);
  EXPECT_EQ(jitted->status(), 500);
  // Unbounded, the call waits for the requests it asked to stop: they ended with it.
  EXPECT_GE(ms, kAsyncDelayMs);
  EXPECT_LT(ms, kAsyncDelayMs + kSlackMs);
  RecordProperty("call_ms", std::to_string(ms));
  EXPECT_EQ(hung.requests(), static_cast<std::uint64_t>(kMembers - 1));
  EXPECT_EQ(log.count("ensemble"), 1u + kMembers);  // the direct call's one, and these
  EXPECT_EQ(hung.in_flight(), 0);
  EXPECT_EQ(await_abandoned(kMembers - 1), kMembers - 1);
  std::printf(
      "member 0 failed after %d ms: the call threw its error after %.1f ms; nginx logged 499 "
      "for the other %d members' requests\n",
      kAsyncDelayMs, ms, kMembers - 1);
}

// Member 0's request fails at once: the call throws its error at once. A member whose op had
// not started by then never starts; one that had was asked to stop, and its request, if it
// had reached the server, ended with a 499.
TEST_P(PipelineStopTest, MemberFailingAtOnceEndsTheCallAtOnce) {
  llm::timeline log;
  ops_at failing(options_at(server_->url("/v1/fail500/chat/completions")), log, GetParam(),
                 kMembers, kBound);
  ops_at hung(options_at(server_->hung_url()), log, GetParam(), kMembers, kBound);
  const split_ensemble body{&failing.ops, &hung.ops};
  auto direct = llm_error_of([&] { body(kQuestion); });

  auto ensemble = xcs::jit(body);
  std::optional<llm::llm_error> jitted;
  const double ms = millis([&] { jitted = llm_error_of([&] { ensemble(kQuestion); }); });
  expect_same_error(direct, jitted);
  EXPECT_LT(ms, kSlackMs);
  RecordProperty("call_ms", std::to_string(ms));
  const auto started = static_cast<int>(log.count("ensemble")) - 2;  // less both member 0s
  const auto sent = static_cast<int>(hung.requests());
  EXPECT_LE(sent, started);
  EXPECT_LE(started, kMembers - 1);
  // A request the stop ended while it was connecting never reached nginx: wait for the 499s
  // of the others only a while (the call waited for every request, so they have closed).
  const int abandoned = await_abandoned(sent, 200ms);
  EXPECT_LE(abandoned, sent);
  EXPECT_EQ(hung.in_flight(), 0);
  std::printf(
      "member 0 failed at once: the call threw its error after %.1f ms; of the other %d "
      "members, %d started, %d sent their request, and nginx logged 499 for %d\n",
      ms, kMembers - 1, started, sent, abandoned);
}

INSTANTIATE_TEST_SUITE_P(Ops, PipelineStopTest,
                         ::testing::Values(op_kind::blocking, op_kind::async), op_kind_name);

}  // namespace
