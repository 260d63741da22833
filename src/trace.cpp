// SPDX-License-Identifier: MIT
// The trace context: recording, going staged, reads, and messages that name a value.
#include <fmt/format.h>

#include <unwind.h>

#include <cstdint>

#if defined(XCS_HAVE_BACKTRACE)
#include XCS_BACKTRACE_HEADER  // GCC's backtrace.h, by full path (see CMakeLists.txt)
#endif

#include "xcs/detail/result.hpp"
#include "xcs/detail/trace_context.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {
namespace {
thread_local trace_context* t_current = nullptr;
}  // namespace

trace_context* trace_context::current() noexcept { return t_current; }

trace_context::scope::scope(trace_context& ctx) noexcept : saved_(std::exchange(t_current, &ctx)) {}
trace_context::scope::~scope() { t_current = saved_; }

untraced_scope::untraced_scope() noexcept : saved_(std::exchange(t_current, nullptr)) {}
untraced_scope::~untraced_scope() { t_current = saved_; }

trace_context* exchange_current_trace(trace_context* ctx) noexcept {
  return std::exchange(t_current, ctx);
}

trace_context::trace_context(trace_mode mode, trace_sink* sink) : mode_(mode), sink_(sink) {
  if (mode == trace_mode::staged) {
    mode_ = trace_mode::recording;
    go_staged();
  }
}

// The staged run must end before the graph goes: its nodes read the graph's constants.
trace_context::~trace_context() {
  if (mode_ == trace_mode::staged) (void)drain();
}

value_id trace_context::add_node(std::string_view name, std::span<const value_id> inputs,
                                 const kernel& k, const void* fn,
                                 std::shared_ptr<const op_identity> op) {
  value_id r = graph_.add_node(name, inputs, k, fn, std::move(op));
  if (mode_ == trace_mode::staged)
    sink_->node_added(static_cast<node_id>(graph_.nodes().size() - 1));
  return r;
}

value_id trace_context::pack(const std::type_info& type, std::span<const value_id> elements,
                             const kernel& k) {
  for (const auto& [t, v] : packs_) {
    if (*t != type) continue;
    auto in = graph_.inputs(graph_.nodes()[graph_.producer(v)]);
    if (std::equal(in.begin(), in.end(), elements.begin(), elements.end())) return v;
  }
  value_id v = add_node("pack", elements, k, nullptr, nullptr);
  packs_.emplace_back(&type, v);
  return v;
}

void trace_context::go_staged() {
  mode_ = trace_mode::staged;
  sink_->went_staged(*this);
}

const void* trace_context::read(value_id v, const std::type_info& as, const void* pc) {
  ++reads_;
  if (mode_ != trace_mode::staged && !went_staged()) {
    staged_value_ = v;
    staged_type_ = &as;
    staged_site_ = code_site::capture(pc);
  }
  if (mode_ == trace_mode::dry) abort(staged_reason());
  if (mode_ == trace_mode::recording) go_staged();
  // The owner may run nodes while it waits: their ops are plain calls, not part of the trace.
  untraced_scope outside;
  return sink_->read(v, as, pc);
}

std::exception_ptr trace_context::drain() noexcept {
  if (mode_ != trace_mode::staged) return nullptr;
  untraced_scope outside;
  return sink_->drain();
}

void trace_context::run_outside(std::string_view what, const void* pc) {
  if (mode_ == trace_mode::staged) return;
  if (!went_staged()) {
    staged_what_ = what;
    staged_site_ = code_site::capture(pc);
  }
  if (mode_ == trace_mode::dry) abort(staged_reason());
  go_staged();
}

void trace_context::abort(std::string reason) {
  fail(std::move(reason));
  throw trace_abort{};
}

void trace_context::fail(std::string reason) {
  if (reason_.empty()) reason_ = std::move(reason);
}

std::string trace_context::staged_reason(bool with_line) const {
  std::string line = with_line ? source_line(staged_site_) : std::string();
  if (staged_value_ != no_id) {
    return fmt::format("the body reads the value of {}, as {}{}", describe(staged_value_),
                       graph::type_name(*staged_type_), line);
  }
  if (!staged_what_.empty()) {
    return fmt::format("the body calls {} with plain arguments{}", staged_what_, line);
  }
  return {};
}

const void* read_value(trace_context* ctx, value_id v, const std::type_info& as, const void* pc) {
  return context_of(ctx, v).read(v, as, pc);
}

void result_recipe::plan_moves(const graph& g) {
  if (leaves.size() == 1) {  // the common case, without counting
    leaves[0].move = g.values()[leaves[0].value].kind == value_kind::result;
    return;
  }
  std::vector<std::uint32_t> uses(g.values().size(), 0);
  for (const auto& l : leaves) ++uses[l.value];
  for (auto& l : leaves)
    l.move = g.values()[l.value].kind == value_kind::result && uses[l.value] == 1;
}

std::string trace_context::describe(value_id v) const {
  const value& val = graph_.values()[v];
  switch (val.kind) {
    case value_kind::argument:
      return fmt::format("argument {} ({})", val.position(), graph::type_name(*val.type));
    case value_kind::element:
      return fmt::format("element {} of {}", val.element_index(), describe(val.parent));
    case value_kind::constant:
      return fmt::format("a constant ({})", graph::type_name(*val.type));
    case value_kind::result: {
      const node& n = graph_.nodes()[val.producer()];
      std::string what = n.op ? fmt::format("the result of op '{}'", n.name)
                              : fmt::format("the result of operator '{}'", n.name);
      return fmt::format("{} (node %{}, {}){}", what, val.producer(), graph::type_name(*val.type),
                         depends_on(v));
    }
  }
  return "a value";
}

std::string trace_context::depends_on(value_id v) const {
  // The arguments a value was computed from, found by walking its inputs back.
  const graph& g = graph_;
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
      args[val.position()] = true;
    } else if (val.kind == value_kind::element) {
      stack.push_back(val.parent);
    } else if (val.kind == value_kind::result) {
      for (value_id in : g.inputs(g.nodes()[val.producer()])) stack.push_back(in);
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

struct unwind_state {
  code_site* site;
  const void* from;
  bool found = false;
};

_Unwind_Reason_Code on_frame(_Unwind_Context* c, void* data) {
  auto* st = static_cast<unwind_state*>(data);
  const void* ip = reinterpret_cast<const void*>(_Unwind_GetIP(c));
  if (!st->found) {
    st->found = ip == st->from;  // frames inside xcs until then
    if (!st->found) return _URC_NO_REASON;
  }
  st->site->pcs[st->site->size++] = ip;
  return st->site->size == code_site::capacity ? _URC_END_OF_STACK : _URC_NO_REASON;
}

#if defined(XCS_HAVE_BACKTRACE)
/// The standard library's headers and xcs's own: not the line a user wants named.
bool library_file(std::string_view file) {
  return file.find("/c++/") != std::string_view::npos ||
         file.find("include/xcs/") != std::string_view::npos || file.rfind("/usr/include/", 0) == 0;
}

struct source_line_info {
  std::string file;
  int line = 0;
};

void ignore_error(void*, const char*, int) {}

// Called for each frame at one address, innermost (inlined) first; nonzero stops.
int on_line(void* data, std::uintptr_t, const char* file, int line, const char*) {
  auto* out = static_cast<source_line_info*>(data);
  if (!file || library_file(file)) return 0;
  out->file = file;
  out->line = line;
  return 1;
}
#endif

}  // namespace

code_site code_site::capture(const void* pc) noexcept {
  code_site site;
  unwind_state st{&site, pc};
  _Unwind_Backtrace(&on_frame, &st);
  if (!st.found) {  // unwinding missed it (no unwind tables): the read's own line, at least
    site.pcs[0] = pc;
    site.size = pc ? 1 : 0;
  }
  return site;
}

std::string source_line(const code_site& site) {
  static constexpr const char* kNoLine = " (no line information: build with -g)";
#if defined(XCS_HAVE_BACKTRACE)
  if (site.size == 0) return kNoLine;
  // Created once; libbacktrace's state is thread-safe with threaded = 1 and never freed.
  static backtrace_state* state = backtrace_create_state(nullptr, 1, &ignore_error, nullptr);
  if (!state) return kNoLine;
  source_line_info found;
  for (std::size_t i = 0; i < site.size && found.file.empty(); ++i) {
    // A return address follows its call: step back into the calling line.
    backtrace_pcinfo(state, reinterpret_cast<std::uintptr_t>(site.pcs[i]) - 1, &on_line,
                     &ignore_error, &found);
  }
  // Only library lines (the standard library's, libc's, xcs's): the body's own frames have
  // no debug information.
  if (found.file.empty()) return kNoLine;
  return fmt::format(" at {}:{}", found.file, found.line);
#else
  (void)site;
  return kNoLine;
#endif
}

}  // namespace xcs::detail
