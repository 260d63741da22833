// SPDX-License-Identifier: MIT
// The pipeline's prompts, its timeline and its ops.
#include "pipeline.hpp"

#include <fmt/format.h>

#include <algorithm>

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

namespace {
xcs::op_fn<chat_fn> make_llm_op(const client& api, timeline& log, std::uint32_t max_concurrency) {
  // Blocking: the op waits on the network, so it goes straight to xcs's blocking lane.
  if (max_concurrency == 0) return xcs::op("llm", chat_fn{&api, &log}, xcs::blocking);
  return xcs::op("llm", chat_fn{&api, &log}, xcs::blocking, xcs::max_concurrency(max_concurrency));
}
xcs::async_op_fn<chat_async_fn, std::string> make_llm_async_op(async_client* api, timeline& log,
                                                               std::uint32_t max_concurrency) {
  // The bound holds a slot from the start of a request until its completion.
  if (max_concurrency == 0) return xcs::async_op("llm", chat_async_fn{api, &log});
  return xcs::async_op("llm", chat_async_fn{api, &log}, xcs::max_concurrency(max_concurrency));
}
}  // namespace

pipeline_ops::pipeline_ops(const client& api, timeline& log, int members_,
                           std::uint32_t max_concurrency, async_client* async_api)
    : members(members_),
      use_async(async_api != nullptr),
      ask_prompt(xcs::op("ask_prompt", member_prompt_fn{members_})),
      judge_prompt(xcs::op("judge_prompt", judge_prompt_fn{})),
      synthesis_prompt(xcs::op("synthesis_prompt", synthesis_prompt_fn{})),
      llm(make_llm_op(api, log, max_concurrency)),
      llm_async(make_llm_async_op(async_api, log, max_concurrency)) {}

}  // namespace llm
