// SPDX-License-Identifier: MIT
// The blocking monitor's mark of a thread running an op (its implementation: src/monitor.cpp).
// Public in detail/ because a batch op's sync function is called from its template.
#pragma once

namespace xcs::detail {

struct op_runtime;
struct participant;

/// Marks the calling thread as running `op` (null: an operator, which keeps the
/// outer op) for the watch's lifetime, so the monitor can see it wait. Restores the outer op
/// when destroyed, and if the monitor saw this node waiting, tells it at once that one
/// stand-in worker fewer is needed. A no-op on the blocking lane, which is not monitored.
/// Nests (an op may run an inner plan on the same thread).
class op_watch {
 public:
  explicit op_watch(op_runtime* op) noexcept;
  ~op_watch();
  op_watch(const op_watch&) = delete;
  op_watch& operator=(const op_watch&) = delete;

 private:
  participant* slot_;
  op_runtime* outer_ = nullptr;
};

}  // namespace xcs::detail
