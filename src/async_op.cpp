// SPDX-License-Identifier: MIT
// Async ops: the errors of a lost completion, and direct calls that wait for their completion.
#include <fmt/format.h>

#include <atomic>
#include <new>
#include <thread>

#include "run_waiter.hpp"
#include "xcs/detail/async.hpp"
#include "xcs/detail/op_runtime.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {
namespace {

std::exception_ptr make_error(const op_runtime* op, const char* what) noexcept {
  try {
    return std::make_exception_ptr(
        error(fmt::format("xcs: async op '{}': {}", op ? op->name : "?", what)));
  } catch (...) {
    return std::current_exception();  // std::bad_alloc
  }
}

/// The thread of a direct call, waiting for its completion: it parks as a run's owner does
/// (run_waiter), so on a CPU worker its fiber is suspended and the worker runs other work.
class waiting_thread final : public async_sink {
 public:
  void settle(async_slot&) noexcept override {
    // `waking_` is set before `done_` (whose seq_cst store releases it) and cleared after the
    // last touch, so the waiter, which destroys this object, waits for the waker to leave.
    waking_.store(true, std::memory_order_relaxed);
    done_.store(true, std::memory_order_seq_cst);
    waiter_.wake_if_parked();
    waking_.store(false, std::memory_order_release);
  }
  void wait() noexcept {
    while (!done_.load(std::memory_order_seq_cst)) {
      waiter_.park([this] { return !done_.load(std::memory_order_seq_cst); });
    }
    while (waking_.load(std::memory_order_acquire)) std::this_thread::yield();
  }

 private:
  run_waiter waiter_;
  std::atomic<bool> done_{false};
  std::atomic<bool> waking_{false};
};

}  // namespace

std::exception_ptr completion_dropped(const op_runtime* op) noexcept {
  return make_error(op, "completion dropped (destroyed without being called)");
}

std::exception_ptr completion_null_failure(const op_runtime* op) noexcept {
  return make_error(op, "completion failed with a null exception_ptr");
}

void run_async_here(op_runtime* op, void* out, void (*destroy)(void*) noexcept,
                    void (*start)(void* context, async_slot& slot) noexcept, void* context) {
  waiting_thread here;
  async_slot slot;
  slot.prepare(here, op, out, 0, 0);
  start(context, slot);
  if (!slot.arrive()) {
    // The completion comes later, from elsewhere. The thread holds no core meanwhile (a CPU
    // worker runs other fibers; another thread sleeps, and the monitor may stand in for it).
    here.wait();
  }
  if (slot.error()) {
    if (slot.has_value) destroy(out);
    std::rethrow_exception(slot.error());
  }
}

}  // namespace xcs::detail
