// SPDX-License-Identifier: MIT
// The pipeline's middle: graph -> analysis -> plan, and the decision whether a plan pays.
#pragma once

#include <memory>
#include <string>

#include "xcs/detail/analysis.hpp"
#include "xcs/detail/graph.hpp"
#include "xcs/detail/plan.hpp"

namespace xcs::detail {

/// How compiling a finished trace went.
enum class compile_status : std::uint8_t {
  compiled,        ///< `plan` is set
  no_parallelism,  ///< nothing to run at the same time: calling directly is as fast; `reason`
  out_of_memory,   ///< no memory for the analysis or the plan
};

struct compile_result {
  compile_status status = compile_status::out_of_memory;
  std::shared_ptr<const graph> ir;
  analysis info;
  std::shared_ptr<const plan> compiled;
  std::string reason;
};

/// Why `g` analyzed as `a` is not worth a plan (empty: it is).
std::string plan_not_worth(const graph& g, const analysis& a);

/// Analyzes `g` and, if it has ops to run at the same time, compiles it. Never throws.
compile_result compile(graph&& g) noexcept;

}  // namespace xcs::detail
