// SPDX-License-Identifier: MIT
// The shared limiter and the shared answer cache of --redis.
#include "shared_answers.hpp"

#include <xcs/redis.hpp>

#include <atomic>
#include <chrono>

namespace llm {

xcs::rate_limiter shared_rate_limiter(const std::string& redis_url, const std::string& endpoint,
                                      double rate, double burst) {
  return xcs::redis_rate_limiter(redis_url, "xcs-llm:rate:" + endpoint, rate, burst);
}

shared_run answer_shared(
    const std::string& redis_url, const ensemble_pipeline& one,
    const std::vector<std::string>& questions, const std::string& model,
    const std::function<void(const std::string&, const pipeline_result&)>& print) {
  auto answers = xcs::redis_cache(redis_url, "xcs-llm:answers:", std::chrono::hours(24));
  auto jitted = xcs::jit(one);
  std::atomic<std::size_t> runs{0};
  // The ensemble size and the model are inputs, so that a run with another --n or --model does
  // not reuse these answers; the version changes with the prompts.
  auto answer = xcs::op(
      "answer",
      [&](const std::string& question, int, const std::string&) {
        runs.fetch_add(1, std::memory_order_relaxed);
        return jitted(question);
      },
      xcs::cache(answers), xcs::cache_version("prompts-v1"));
  for (const std::string& q : questions) print(q, answer(q, one.ops->members, model));
  shared_run r;
  r.computed = runs.load();
  r.cached = questions.size() - r.computed;
  r.bypassed = answers.bypassed();
  return r;
}

}  // namespace llm
