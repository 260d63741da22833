// SPDX-License-Identifier: MIT
// The LLM pipeline as xcs ops: an ensemble of model calls on one question, a judge that reads
// every answer, and a synthesis; one question at a time or a batch.
#pragma once

#include <xcs/xcs.hpp>

#include <chrono>
#include <cstdint>
#include <exception>
#include <mutex>
#include <numeric>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "async_client.hpp"
#include "llm_client.hpp"

namespace llm {

/// One request of the pipeline: the step it belongs to ("ensemble", "judge", "synthesis"),
/// for the timeline, and the prompt.
struct chat_request {
  std::string step;
  std::string prompt;
};

/// The prompts. Each ends with "Question: <question>"; the fake model in nginx.conf.in relies
/// on their first words and on that ending.
chat_request member_prompt(const std::string& question, int member, int members);
chat_request judge_prompt(const std::string& question, const std::vector<std::string>& answers);
chat_request synthesis_prompt(const std::string& question, const std::vector<std::string>& answers,
                              const std::string& verdict);

/// When each request started and ended, by step. Thread-safe.
class timeline {
 public:
  using clock = std::chrono::steady_clock;
  void record(const std::string& step, clock::time_point start, clock::time_point end);
  /// From the first start to the last end of the step's requests, in ms (0 if none).
  double span_ms(std::string_view step) const;
  std::size_t count(std::string_view step) const;
  void clear();

 private:
  struct entry {
    std::string step;
    clock::time_point start, end;
  };
  mutable std::mutex mutex_;  // guards entries_
  std::vector<entry> entries_;
};

/// The op bodies. Each only reads its arguments, so instances run on many threads at once.
struct member_prompt_fn {
  int members;
  chat_request operator()(const std::string& question, int member) const {
    return member_prompt(question, member, members);
  }
};
struct judge_prompt_fn {
  chat_request operator()(const std::string& question,
                          const std::vector<std::string>& answers) const {
    return judge_prompt(question, answers);
  }
};
struct synthesis_prompt_fn {
  chat_request operator()(const std::string& question, const std::vector<std::string>& answers,
                          const std::string& verdict) const {
    return synthesis_prompt(question, answers, verdict);
  }
};
/// The one op that talks to the endpoint: every step's request goes through it, so its
/// concurrency bound is the bound on requests in flight to the API.
///
/// xcs passes the op instance's stop token (the parameter after the inputs): stop is requested
/// at the deadline or cancellation of a bounded call (`with_deadline`, `with_stop_token`) and
/// when an op before it in program order failed; the request then ends within a few
/// milliseconds with `failure::cancelled`. A direct call gets an empty token, unless it runs
/// inside a bounded call.
struct chat_fn {
  const client* api;
  timeline* log;
  std::string operator()(const chat_request& request, std::stop_token stop) const;
};

/// A callback for `async_client::start` that completes `done` with the reply, or fails it with
/// the request's llm_error, the exception the blocking op throws for the same failure. The
/// error is moved on, not copied: the event thread keeps no reference to it (libstdc++'s
/// exception_ptr count is invisible to TSan, which reports a race when the last reference dies
/// on the event thread after the caller read the exception).
inline reply_callback completing(xcs::completion<std::string> done) {
  return [done = std::move(done)](reply_or_error reply) mutable {
    if (reply.error) {
      done.fail(std::move(reply.error));
    } else {
      done(std::move(reply.text));
    }
  };
}

/// The same op, asynchronous: starts the request on the async client and returns; the client's
/// event thread completes it, so no thread waits for the reply. The request stops when the
/// completion's `stop_token()` does, as `chat_fn`'s does.
struct chat_async_fn {
  async_client* api;
  timeline* log;
  void operator()(const chat_request& request, xcs::completion<std::string> done) const;
};

/// Whether a failed request may succeed if it is sent again: an `llm_error` with HTTP 429 (rate
/// limited) or 503 (overloaded), or a transport failure (no HTTP answer: refused, reset). Not
/// other statuses, bad responses, the client's timeout, cancellations, or anything that is not
/// an `llm_error` (`xcs::timeout_error` included). The chat op's `xcs::retry_if`.
bool transient(const std::exception_ptr& error);

/// How the chat op treats the endpoint: xcs's op options, each passed only when it is set.
/// Both chat ops (`llm`, `llm_async`) get the same; copies of one limiter share its tokens.
///
///     llm::chat_policy policy;
///     policy.rate = xcs::rate_limiter(18, 5);  // under the API's 20 requests a second
///     policy.max_attempts = 5;                 // 429, 503 and transport failures, 4 times more
struct chat_policy {
  /// Requests in flight at once, across every jitted function and thread (0: no bound):
  /// `xcs::max_concurrency`.
  std::uint32_t max_concurrency = 0;
  /// A token of this bucket before each request starts, retries included: `xcs::rate_limit`.
  /// A waiting request holds no thread in a jitted call; a direct call waits on its thread.
  std::optional<xcs::rate_limiter> rate;
  /// Runs of one request in all (1: none again): `xcs::retry(max_attempts, first_backoff)`,
  /// for the failures `transient` accepts (`xcs::retry_if`). The wait before a retry is
  /// uniform over [0, first_backoff * 2^(retry - 1)], capped at 30 * first_backoff.
  std::uint32_t max_attempts = 1;
  std::chrono::milliseconds first_backoff{100};
  /// How long one attempt may run in a jitted call: then it fails with `xcs::timeout_error`
  /// and its request is stopped (it ends with `failure::cancelled`, which nobody sees). Not
  /// retried. A direct call has only the client's own timeout (`client_options::timeout_ms`).
  std::optional<std::chrono::milliseconds> timeout;
};

/// The ops of the pipeline. Requests go through `llm_async` when the ops are made with an
/// async client, else through `llm`; `policy` applies to both.
struct pipeline_ops {
  pipeline_ops(const client& api, timeline& log, int members, const chat_policy& policy,
               async_client* async_api = nullptr);
  /// `max_concurrency` bounds the requests in flight at once across every jitted function and
  /// thread that uses these ops (0: no bound); no other policy.
  pipeline_ops(const client& api, timeline& log, int members, std::uint32_t max_concurrency,
               async_client* async_api = nullptr);

  int members;
  bool use_async;
  xcs::op_fn<member_prompt_fn> ask_prompt;
  xcs::op_fn<judge_prompt_fn> judge_prompt;
  xcs::op_fn<synthesis_prompt_fn> synthesis_prompt;
  xcs::op_fn<chat_fn> llm;                                 ///< blocks a lane thread
  xcs::async_op_fn<chat_async_fn, std::string> llm_async;  ///< holds no thread

  /// One request through the op in use: a traced reply while tracing, else the reply.
  template <class Request>
  auto chat(const Request& request) const {
    return use_async ? llm_async(request) : llm(request);
  }
};

/// The answers of the ensemble, the judge's verdict and the final answer.
using pipeline_result = std::tuple<std::vector<std::string>, std::string, std::string>;

/// One question, written as plain sequential code. Called with a std::string it runs the
/// requests one after another; under xcs::jit the ensemble's requests run at the same time.
struct ensemble_pipeline {
  const pipeline_ops* ops;

  template <class Question>
  auto operator()(const Question& question) const {
    std::vector<int> members(static_cast<std::size_t>(ops->members));
    std::iota(members.begin(), members.end(), 0);
    auto answers =
        xcs::map([&](int m) { return ops->chat(ops->ask_prompt(question, m)); }, members);
    // While tracing, answers is a std::vector<xcs::traced<std::string>>; passed to an op it
    // becomes one std::vector<std::string> made when all the answers are in.
    auto verdict = ops->chat(ops->judge_prompt(question, answers));
    auto final_answer = ops->chat(ops->synthesis_prompt(question, answers, verdict));
    return std::make_tuple(answers, verdict, final_answer);
  }
};

/// A list of questions: the pipeline for each, all independent of each other.
struct batch_pipeline {
  ensemble_pipeline one;

  template <class Questions>
  auto operator()(const Questions& questions) const {
    return xcs::map(one, questions);
  }
};

}  // namespace llm
