// SPDX-License-Identifier: MIT
// The pipeline's middle: graph -> analysis -> plan.
#include "compile.hpp"

#include <fmt/format.h>

#include <new>

namespace xcs::detail {

std::string plan_not_worth(const graph& g, const analysis& a) {
  const std::size_t n = g.nodes().size();
  if (n == 0) return "the body records no ops";
  if (a.max_parallelism < 2) {
    return fmt::format(
        "no independent ops: the {} op(s) form a single chain, so a plan cannot run anything "
        "at the same time",
        n);
  }
  return {};
}

compile_result compile(graph&& g) noexcept {
  compile_result out;
  try {
    out.info = analyze(g);
    out.reason = plan_not_worth(g, out.info);
    if (!out.reason.empty()) {
      out.status = compile_status::no_parallelism;
      return out;
    }
    out.ir = std::make_shared<const graph>(std::move(g));
    out.compiled = std::make_shared<const plan>(out.ir, out.info);
    out.status = compile_status::compiled;
  } catch (...) {
    // Only std::bad_alloc can come from here: analysis and compiling run no user code.
    out = compile_result{};
  }
  return out;
}

}  // namespace xcs::detail
