// SPDX-License-Identifier: MIT
// The recorder a trace writes to, found through a thread-local pointer while a trace runs.
#pragma once

#include <map>
#include <memory>
#include <source_location>
#include <string>
#include <typeinfo>
#include <utility>
#include <vector>

#include "xcs/graph.hpp"

namespace xcs::detail {

/// Thrown through the user's body to stop a trace. Deliberately not a std::exception, so a
/// body's `catch (const std::exception&)` does not swallow it; a `catch (...)` that does is
/// caught out by `trace_context::aborted`.
struct trace_abort {};

class trace_context {
 public:
  graph g;
  /// Pack nodes made so far, by container type and elements: the same vector of traced
  /// values passed to several ops is packed once.
  std::map<std::pair<const std::type_info*, std::vector<value_id>>, value_id> packs;

  /// The trace running on this thread, or null.
  static trace_context* current() noexcept { return current_; }

  /// Installs `ctx` as this thread's trace for the scope's lifetime (nests).
  class scope {
   public:
    explicit scope(trace_context& ctx) noexcept : saved_(std::exchange(current_, &ctx)) {}
    ~scope() { current_ = saved_; }
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

   private:
    trace_context* saved_;
  };

  /// Ends the trace: the call falls back and `reason` becomes the fallback reason.
  [[noreturn]] void abort(std::string reason) {
    if (reason_.empty()) reason_ = std::move(reason);
    throw trace_abort{};
  }
  bool aborted() const noexcept { return !reason_.empty(); }
  const std::string& reason() const noexcept { return reason_; }

  /// Says what a value is, for messages: "argument 0", "element 3 of argument 1",
  /// "the result of op 'summarize' (node %4)".
  std::string describe(value_id v) const;
  /// ", computed from arguments 0, 2" (empty if `v` depends on no argument).
  std::string depends_on(value_id v) const;

 private:
  static thread_local trace_context* current_;
  std::string reason_;
};

/// The trace that `v` belongs to must be this thread's current one.
trace_context& context_of(trace_context* ctx, value_id v);

/// Aborts the trace because the body read the concrete value of `v` (an `if`, a conversion,
/// a call of a plain function) at code address `pc`, which the reason turns into a source
/// line where debug information allows. Never returns.
[[noreturn]] void abort_on_read(trace_context* ctx, value_id v, const std::type_info& as,
                                const void* pc);

}  // namespace xcs::detail
