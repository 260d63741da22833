// SPDX-License-Identifier: MIT
// The recorder a body writes to while it runs on traced values, found through a thread-local
// pointer. It records ops into a graph and, once the call runs staged, hands each new node and
// each read to the sink it was given (the call, which owns the run).
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <typeinfo>
#include <utility>
#include <vector>

#include "xcs/detail/graph.hpp"

namespace xcs::detail {

class trace_context;

/// Where the body was when it did something worth naming (a read): the return addresses of
/// its stack, innermost first, kept as numbers so that the lines are looked up only if a
/// message is read. Taking one unwinds the stack (microseconds); it is done once per trace.
struct code_site {
  static constexpr std::size_t capacity = 32;
  std::array<const void*, capacity> pcs{};
  std::size_t size = 0;

  /// The stack from `pc` (a return address into the caller of the xcs function) outward.
  static code_site capture(const void* pc) noexcept;
};

/// Where a staged trace sends what the body does. The call implements it (it owns the run
/// and the cache entry), so the trace layer knows neither.
class trace_sink {
 public:
  /// The trace went staged (a read, or work outside the graph): the nodes recorded so far
  /// start running, and later calls of the signature run staged from the start.
  virtual void went_staged(const trace_context& ctx) = 0;
  /// Node `n` was just recorded in a staged trace: it starts once its inputs are ready.
  virtual void node_added(node_id n) = 0;
  /// The body reads `v` (as `as`, at code address `pc`): waits for it and returns its
  /// address, or throws the exception that keeps it from being computed.
  virtual const void* read(value_id v, const std::type_info& as, const void* pc) = 0;
  /// After the body: runs what is left and waits for every node; returns the exception of the
  /// first throwing op in program order that no read delivered. Idempotent.
  virtual std::exception_ptr drain() noexcept = 0;

 protected:
  ~trace_sink() = default;
};

/// Thrown through the user's body to stop a trace. Deliberately not a std::exception, so a
/// body's `catch (const std::exception&)` does not swallow it; a `catch (...)` that does is
/// caught out by `trace_context::aborted`.
struct trace_abort {};

/// What a trace may do when the body needs a value or runs work at trace time.
enum class trace_mode : std::uint8_t {
  dry,        ///< explain() and dot(): nothing runs; a read ends the trace
  recording,  ///< the first call of a signature: record; a read makes the call staged
  staged,     ///< a staged call: every node runs as soon as its inputs are ready
};

class trace_context {
 public:
  /// `sink` receives the staged call (null for a dry trace, which never goes staged).
  explicit trace_context(trace_mode mode, trace_sink* sink = nullptr);
  ~trace_context();
  trace_context(const trace_context&) = delete;
  trace_context& operator=(const trace_context&) = delete;

  /// The trace running on this thread, or null. Not inline: a class-static thread_local
  /// reached from other translation units goes through a wrapper that sanitizers flag.
  static trace_context* current() noexcept;

  /// Installs `ctx` as this thread's trace for the scope's lifetime (nests).
  class scope {
   public:
    explicit scope(trace_context& ctx) noexcept;
    ~scope();
    scope(const scope&) = delete;
    scope& operator=(const scope&) = delete;

   private:
    trace_context* saved_;
  };

  graph& ir() noexcept { return graph_; }
  const graph& ir() const noexcept { return graph_; }
  bool staged() const noexcept { return mode_ == trace_mode::staged; }

  /// Records a node (see graph::add_node) and, in a staged call, hands it to the sink. Returns its
  /// result value (no_id for void kernels).
  value_id add_node(std::string_view name, std::span<const value_id> inputs, const kernel& k,
                    const void* fn, std::shared_ptr<const op_identity> op);
  /// The pack node of container type `type` over `elements`, made once per trace.
  value_id pack(const std::type_info& type, std::span<const value_id> elements, const kernel& k);

  /// The body reads the concrete value of `v` (as type `as`, at code address `pc`). In a staged
  /// or recording call: the sink waits for it (a recording call becomes staged first) and
  /// returns its address, or throws the exception that keeps it from being computed. In a dry
  /// trace: ends the trace.
  const void* read(value_id v, const std::type_info& as, const void* pc);
  /// Reads the body made so far (dry traces count the one that ends them).
  std::uint64_t reads() const noexcept { return reads_; }
  /// The body is about to run work outside the graph (`what`: an op or a jitted function
  /// called with plain arguments). A recording call becomes staged, so that the work runs
  /// once, in program order; a dry trace ends.
  void run_outside(std::string_view what, const void* pc);

  /// Ends the trace: the call falls back and `reason` becomes the fallback reason.
  [[noreturn]] void abort(std::string reason);
  /// Sets the reason a trace cannot become a plan, without throwing (first reason wins).
  void fail(std::string reason);
  bool aborted() const noexcept { return !reason_.empty(); }
  const std::string& reason() const noexcept { return reason_; }

  /// Why the trace went staged ("the body reads ... at f.cpp:12"), built lazily; empty if it
  /// did not. The code address is kept so that the line is looked up only when asked for.
  std::string staged_reason(bool with_line = true) const;
  const code_site& staged_site() const noexcept { return staged_site_; }
  /// The value whose read made the trace staged (no_id if it went staged for another reason).
  value_id staged_value() const noexcept { return staged_value_; }
  bool went_staged() const noexcept { return staged_value_ != no_id || !staged_what_.empty(); }

  /// Staged call, after the body: the sink's drain (see trace_sink), with no trace current.
  std::exception_ptr drain() noexcept;

  /// Says what a value is, for messages: "argument 0", "element 3 of argument 1",
  /// "the result of op 'summarize' (node %4)".
  std::string describe(value_id v) const;
  /// ", computed from arguments 0, 2" (empty if `v` depends on no argument).
  std::string depends_on(value_id v) const;

 private:
  void go_staged();

  trace_mode mode_;
  trace_sink* sink_;
  std::uint64_t reads_ = 0;
  graph graph_;
  std::vector<std::pair<const std::type_info*, value_id>> packs_;  // type and pack node result
  std::string reason_;
  // What made the call staged: a read of `staged_value_` as `staged_type_`, or work outside
  // the graph (`staged_what_`), at `staged_site_`.
  value_id staged_value_ = no_id;
  const std::type_info* staged_type_ = nullptr;
  std::string staged_what_;
  code_site staged_site_;
};

/// The value `v` of `ctx`, read by the body at code address `pc` (see trace_context::read).
const void* read_value(trace_context* ctx, value_id v, const std::type_info& as, const void* pc);

/// While it lives, this thread runs no trace: ops and jitted functions called meanwhile run
/// as plain calls (an op's body run by a staged call's owner, a nested jitted call).
class untraced_scope {
 public:
  untraced_scope() noexcept;
  ~untraced_scope();
  untraced_scope(const untraced_scope&) = delete;
  untraced_scope& operator=(const untraced_scope&) = delete;

 private:
  trace_context* saved_;
};

/// The trace that `v` belongs to must be this thread's current one.
trace_context& context_of(trace_context* ctx, value_id v);

/// " at file.cpp:42": the first line of `site` outside the standard library and outside xcs,
/// so a read inside std::accumulate or xcs::map names the body's own line; "" without debug
/// information. Slow the first time (it reads the debug information): call it only when a
/// message is read.
std::string source_line(const code_site& site);

}  // namespace xcs::detail
