// SPDX-License-Identifier: MIT
// --redis URL: what many processes of the example share through one Redis, the model API's
// rate-limit budget and the answers already computed (built with the component xcs::redis).
#pragma once

#include <xcs/xcs.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "pipeline.hpp"

namespace llm {

/// A rate limiter of `rate` requests a second, in bursts of up to `burst`, whose bucket lives in
/// Redis at `redis_url` under a key named after `endpoint`: every process given the same URL and
/// endpoint shares it (xcs::redis_rate_limiter). Throws xcs::error for a malformed URL.
xcs::rate_limiter shared_rate_limiter(const std::string& redis_url, const std::string& endpoint,
                                      double rate, double burst);

/// How answer_shared went.
struct shared_run {
  std::size_t computed = 0;    ///< questions this process ran the pipeline for
  std::size_t cached = 0;      ///< questions answered from Redis (or by another caller meanwhile)
  std::uint64_t bypassed = 0;  ///< questions run without the cache: Redis was down or slow
};

/// Answers each question through an op cached in Redis at `redis_url` (xcs::redis_cache, for a
/// day): the key is the question, the ensemble size and the model; a miss runs the jitted
/// pipeline `one`. Processes asking for one question at once make one pipeline run between
/// them; the others wait for its answer. `print` is called with each answer in order. Throws
/// what the pipeline throws (an error is not cached), xcs::error for a malformed URL.
shared_run answer_shared(
    const std::string& redis_url, const ensemble_pipeline& one,
    const std::vector<std::string>& questions, const std::string& model,
    const std::function<void(const std::string&, const pipeline_result&)>& print);

}  // namespace llm
