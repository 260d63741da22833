// SPDX-License-Identifier: MIT
// The trace context: messages that name the value a body read.
#include <fmt/format.h>

#include "xcs/detail/trace_context.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {

thread_local trace_context* trace_context::current_ = nullptr;

std::string trace_context::describe(value_id v) const {
  const value& val = g.values()[v];
  switch (val.kind) {
    case value_kind::argument:
      return fmt::format("argument {} ({})", val.index, graph::type_name(*val.type));
    case value_kind::element:
      return fmt::format("element {} of {}", val.index, describe(val.parent));
    case value_kind::constant:
      return fmt::format("a constant ({})", graph::type_name(*val.type));
    case value_kind::result:
      return fmt::format("the result of op '{}' (node %{}, {})", g.nodes()[val.index].name,
                         val.index, graph::type_name(*val.type));
  }
  return "a value";
}

trace_context& context_of(trace_context* ctx, value_id v) {
  if (ctx == nullptr || ctx != trace_context::current()) {
    throw trace_error(fmt::format(
        "xcs: traced value %{} was used outside the trace that made it (did the body store a "
        "traced value somewhere that outlived the trace?)",
        v));
  }
  return *ctx;
}

void abort_on_read(trace_context* ctx, value_id v, const std::type_info& as) {
  trace_context& c = context_of(ctx, v);
  c.abort(
      fmt::format("the body reads the value of {} as {} (an if, a conversion, or a call of "
                  "a plain function); values are only known when the plan runs",
                  c.describe(v), graph::type_name(as)));
}

}  // namespace xcs::detail
