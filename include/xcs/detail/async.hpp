// SPDX-License-Identifier: MIT
// One start of an async op, from the call of its function to its completion: the slot its
// `xcs::completion` fills, and the run (or direct call) that the slot reports to.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>

namespace xcs::detail {

struct op_runtime;
struct async_slot;

/// Where an async op reports: a run (a plan's or a staged call's), or a direct call's waiting
/// thread.
class async_sink {
 public:
  /// Both parties of `s` are done (the op's function returned or threw, and its completion was
  /// called, failed or dropped): the node's outcome is final. Called once per start, on the
  /// thread of the later party, when that is the completion's (a starting sink sees the other
  /// case through `async_slot::arrive`).
  virtual void settle(async_slot& s) noexcept = 0;

 protected:
  ~async_sink() = default;
};

/// One start of an async op. The sink fills it with `prepare` and calls the kernel's start;
/// the completion writes the outcome. The start ends when both parties have arrived: the
/// starting thread once the op's function returned (or threw), and the completion once called
/// or dropped. Whichever arrives second settles the node, so a completion called from inside
/// the function settles on the starting thread, which then goes on as after a plain op.
///
/// The fields each party writes before its arrival are read only by the later party, after
/// its own arrival: `pending` (acquire-release) orders them.
struct async_slot {
  async_sink* sink = nullptr;
  op_runtime* op = nullptr;  ///< for messages
  void* out = nullptr;       ///< where the completion constructs the result (null for void)
  std::uint32_t node = 0;    ///< the node in the sink's run
  std::uint64_t t0 = 0;      ///< ticks when the function was called (see src/clock.hpp)
  /// Parties still to arrive (2, then 1, then 0).
  std::atomic<std::uint32_t> pending{0};
  bool has_value = false;          ///< the completion constructed the result at `out`
  std::exception_ptr start_error;  ///< the function threw (wins over the completion's outcome)
  std::exception_ptr done_error;   ///< passed to fail(), or the completion was dropped
  /// An op with a timeout: the attempt this start belongs to (the run's), else null.
  void* attempt = nullptr;

  void prepare(async_sink& s, op_runtime* o, void* result, std::uint32_t n,
               std::uint64_t start_ticks) noexcept {
    sink = &s;
    op = o;
    out = result;
    node = n;
    t0 = start_ticks;
    has_value = false;
    start_error = nullptr;
    done_error = nullptr;
    // Relaxed: the completion reaches another thread only through the user's own hand-off.
    pending.store(2, std::memory_order_relaxed);
  }
  /// One party is done; true for the second, which must settle the node.
  bool arrive() noexcept { return pending.fetch_sub(1, std::memory_order_acq_rel) == 1; }
  /// After `prepare`: the start's party is done before the completion can be reached (a batch
  /// op's call, handed over only once its batch is sent): a store, not a read-modify-write;
  /// the hand-over publishes it.
  void start_arrived_first() noexcept { pending.store(1, std::memory_order_relaxed); }
  /// The node's exception, or null if it produced its result.
  const std::exception_ptr& error() const noexcept {
    return start_error ? start_error : done_error;
  }
};

/// The completion's arrival: settles the node if the function has returned already. A
/// completion that finds the start arrived (acquire) is the second party without a
/// read-modify-write: the start never arrives twice.
inline void completion_arrives(async_slot& s) noexcept {
  if (s.pending.load(std::memory_order_acquire) == 1 || s.arrive()) s.sink->settle(s);
}

/// The `xcs::error` a dropped completion fails its op with ("completion dropped"), and the
/// one for `fail(nullptr)`. Never throw: out of memory, they give `std::bad_alloc`.
std::exception_ptr completion_dropped(const op_runtime* op) noexcept;
std::exception_ptr completion_null_failure(const op_runtime* op) noexcept;

/// A direct call of an async op: prepares a slot whose sink is this thread, calls
/// `start(context, slot)` (which calls the function and records what it throws), and waits,
/// holding no core, until the completion arrives. Then rethrows the op's exception (first
/// destroying a result the completion made, with `destroy`), or returns with the result
/// constructed at `out`.
void run_async_here(op_runtime* op, void* out, void (*destroy)(void*) noexcept,
                    void (*start)(void* context, async_slot& slot) noexcept, void* context);

}  // namespace xcs::detail
