// SPDX-License-Identifier: MIT
// The pipeline's prompts, its timeline and its ops.
#include "pipeline.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <optional>
#include <tuple>
#include <utility>

namespace llm {

chat_request member_prompt(const std::string& question, int member, int members) {
  return {"ensemble", fmt::format("You are member {} of {}. Answer the question in one sentence.\n"
                                  "Question: {}",
                                  member, members, question)};
}

chat_request judge_prompt(const std::string& question, const std::vector<std::string>& answers) {
  std::string prompt = fmt::format(
      "You are the judge. Read the {} answers below and reply with the number of the best "
      "one and why.\n",
      answers.size());
  for (std::size_t i = 0; i < answers.size(); ++i) {
    prompt += fmt::format("Answer {}: {}\n", i, answers[i]);
  }
  return {"judge", prompt + "Question: " + question};
}

chat_request synthesis_prompt(const std::string& question, const std::vector<std::string>& answers,
                              const std::string& verdict) {
  std::string prompt =
      "Write the final answer. Start from the answer the judge chose and add what the others "
      "got right.\nJudge: " +
      verdict + "\n";
  for (std::size_t i = 0; i < answers.size(); ++i) {
    prompt += fmt::format("Answer {}: {}\n", i, answers[i]);
  }
  return {"synthesis", prompt + "Question: " + question};
}

void timeline::record(const std::string& step, clock::time_point start, clock::time_point end) {
  std::lock_guard lock(mutex_);
  entries_.push_back({step, start, end});
}

double timeline::span_ms(std::string_view step) const {
  std::lock_guard lock(mutex_);
  bool any = false;
  clock::time_point first{}, last{};
  for (const entry& e : entries_) {
    if (e.step != step) continue;
    first = any ? std::min(first, e.start) : e.start;
    last = any ? std::max(last, e.end) : e.end;
    any = true;
  }
  return any ? std::chrono::duration<double, std::milli>(last - first).count() : 0.0;
}

std::size_t timeline::count(std::string_view step) const {
  std::lock_guard lock(mutex_);
  return static_cast<std::size_t>(std::count_if(entries_.begin(), entries_.end(),
                                                [&](const entry& e) { return e.step == step; }));
}

void timeline::clear() {
  std::lock_guard lock(mutex_);
  entries_.clear();
}

std::string chat_fn::operator()(const chat_request& request, std::stop_token stop) const {
  auto start = timeline::clock::now();
  struct recorder {
    timeline* log;
    const std::string& step;
    timeline::clock::time_point start;
    ~recorder() { log->record(step, start, timeline::clock::now()); }
  } record{log, request.step, start};
  return api->complete(api->options().url, request.prompt, std::move(stop));
}

void chat_async_fn::operator()(const chat_request& request,
                               xcs::completion<std::string> done) const {
  // Taken before `done` moves into the callback (the order of start's arguments is unspecified).
  std::stop_token stop = done.stop_token();
  api->start(
      request.prompt,
      [log = log, step = request.step, start = timeline::clock::now(),
       complete = completing(std::move(done))](reply_or_error reply) mutable {
        log->record(step, start, timeline::clock::now());
        complete(std::move(reply));
      },
      std::move(stop));
}

bool transient(const std::exception_ptr& error) {
  try {
    std::rethrow_exception(error);
  } catch (const llm_error& e) {
    return e.kind() == failure::transport ||
           (e.kind() == failure::http_status && (e.status() == 429 || e.status() == 503));
  } catch (...) {
    return false;
  }
}

namespace {

// Calls `make(options...)` with `chosen` and those of `rest` that are set: xcs checks every
// option it is given (a bound of 0 throws), so one that is not set must not be passed.
template <class Make, class... Chosen>
auto with_set_options(const Make& make, std::tuple<Chosen...> chosen) {
  return std::apply(make, std::move(chosen));
}
template <class Make, class... Chosen, class Next, class... Rest>
auto with_set_options(const Make& make, std::tuple<Chosen...> chosen, std::optional<Next> next,
                      std::optional<Rest>... rest) {
  if (!next) return with_set_options(make, std::move(chosen), std::move(rest)...);
  return with_set_options(make, std::tuple_cat(std::move(chosen), std::make_tuple(*next)),
                          std::move(rest)...);
}

// The chat op made by `make(options...)` with `policy`'s options. Retries are always passed:
// with one attempt xcs makes no policy of them.
template <class Make>
auto with_policy(const chat_policy& policy, const Make& make) {
  return with_set_options(
      make,
      std::make_tuple(xcs::retry(policy.max_attempts, policy.first_backoff),
                      xcs::retry_if(&transient)),
      policy.max_concurrency > 0 ? std::optional(xcs::max_concurrency(policy.max_concurrency))
                                 : std::nullopt,
      policy.rate ? std::optional(xcs::rate_limit(*policy.rate)) : std::nullopt,
      policy.timeout ? std::optional(xcs::timeout(*policy.timeout)) : std::nullopt);
}

}  // namespace

pipeline_ops::pipeline_ops(const client& api, timeline& log, int members_,
                           const chat_policy& policy, async_client* async_api)
    : members(members_),
      use_async(async_api != nullptr),
      ask_prompt(xcs::op("ask_prompt", member_prompt_fn{members_})),
      judge_prompt(xcs::op("judge_prompt", judge_prompt_fn{})),
      synthesis_prompt(xcs::op("synthesis_prompt", synthesis_prompt_fn{})),
      // Blocking: the op waits on the network, so it goes straight to xcs's blocking lane.
      llm(with_policy(policy,
                      [&](auto... options) {
                        return xcs::op("llm", chat_fn{&api, &log}, xcs::blocking, options...);
                      })),
      // A concurrency bound holds a slot from the start of a request until its completion.
      llm_async(with_policy(policy, [&](auto... options) {
        return xcs::async_op("llm", chat_async_fn{async_api, &log}, options...);
      })) {}

namespace {
chat_policy bounded(std::uint32_t max_concurrency) {
  chat_policy policy;
  policy.max_concurrency = max_concurrency;
  return policy;
}
}  // namespace

pipeline_ops::pipeline_ops(const client& api, timeline& log, int members_,
                           std::uint32_t max_concurrency, async_client* async_api)
    : pipeline_ops(api, log, members_, bounded(max_concurrency), async_api) {}

}  // namespace llm
