// SPDX-License-Identifier: MIT
// The trace context: messages that name the value a body read.
#include <fmt/format.h>

#include <cstdint>

#if defined(XCS_HAVE_BACKTRACE)
#include XCS_BACKTRACE_HEADER  // GCC's backtrace.h, by full path (see CMakeLists.txt)
#endif

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
    case value_kind::result: {
      const node& n = g.nodes()[val.index];
      std::string what = n.op ? fmt::format("the result of op '{}'", n.name)
                              : fmt::format("the result of operator '{}'", n.name);
      return fmt::format("{} (node %{}, {}){}", what, val.index, graph::type_name(*val.type),
                         depends_on(v));
    }
  }
  return "a value";
}

std::string trace_context::depends_on(value_id v) const {
  // The arguments a value was computed from, found by walking its inputs back.
  std::vector<bool> seen(g.values().size(), false);
  std::vector<bool> args(g.argument_count(), false);
  std::vector<value_id> stack{v};
  while (!stack.empty()) {
    value_id x = stack.back();
    stack.pop_back();
    if (seen[x]) continue;
    seen[x] = true;
    const value& val = g.values()[x];
    if (val.kind == value_kind::argument) {
      args[val.index] = true;
    } else if (val.kind == value_kind::element) {
      stack.push_back(val.parent);
    } else if (val.kind == value_kind::result) {
      for (value_id in : g.inputs(g.nodes()[val.index])) stack.push_back(in);
    }
  }
  std::string out;
  for (std::size_t i = 0; i < args.size(); ++i) {
    if (args[i]) out += fmt::format("{}{}", out.empty() ? "" : ", ", i);
  }
  if (out.empty()) return "";
  return fmt::format(", computed from argument{} {}", out.find(',') == std::string::npos ? "" : "s",
                     out);
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

namespace {

#if defined(XCS_HAVE_BACKTRACE)
struct source_line {
  std::string file;
  int line = 0;
};

void ignore_error(void*, const char*, int) {}

int on_line(void* data, std::uintptr_t, const char* file, int line, const char*) {
  auto* out = static_cast<source_line*>(data);
  if (file && out->file.empty()) {
    out->file = file;
    out->line = line;
  }
  return 0;
}
#endif

/// " at body.cpp:42" for a return address in the body, or "" without debug info.
std::string where(const void* pc) {
#if defined(XCS_HAVE_BACKTRACE)
  if (!pc) return "";
  // Created once; libbacktrace's state is thread-safe with threaded = 1 and never freed.
  static backtrace_state* state = backtrace_create_state(nullptr, 1, &ignore_error, nullptr);
  if (!state) return "";
  source_line found;
  // The return address follows the call: step back into the calling line.
  backtrace_pcinfo(state, reinterpret_cast<std::uintptr_t>(pc) - 1, &on_line, &ignore_error,
                   &found);
  if (found.file.empty()) return "";
  return fmt::format(" at {}:{}", found.file, found.line);
#else
  (void)pc;
  return "";
#endif
}

}  // namespace

void abort_on_read(trace_context* ctx, value_id v, const std::type_info& as, const void* pc) {
  trace_context& c = context_of(ctx, v);
  c.abort(
      fmt::format("the body reads the value of {}, as {}{} (in an if, a conversion, or a "
                  "call of a plain function); values are only known when the plan runs",
                  c.describe(v), graph::type_name(as), where(pc)));
}

}  // namespace xcs::detail
