// SPDX-License-Identifier: MIT
// Async ops: the errors of a lost completion, and direct calls that wait for their completion.
#include <fmt/format.h>

#include <condition_variable>
#include <mutex>
#include <new>

#include "monitor.hpp"
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

/// The thread of a direct call, waiting for its completion.
class waiting_thread final : public async_sink {
 public:
  void settle(async_slot&) noexcept override {
    // Notified under the lock: the waiter, which destroys this object once it sees `done_`,
    // cannot return before the notification is over.
    std::lock_guard lock(mutex_);
    done_ = true;
    cv_.notify_one();
  }
  void wait() noexcept {
    std::unique_lock lock(mutex_);
    cv_.wait(lock, [this] { return done_; });
  }

 private:
  std::mutex mutex_;  // guards done_
  std::condition_variable cv_;
  bool done_ = false;
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
    // The completion comes later, from elsewhere. The thread holds no core meanwhile: the
    // monitor may stand in for it if it is a worker.
    park_watch parked;
    parked.thread_sleeps();
    here.wait();
  }
  if (slot.error()) {
    if (slot.has_value) destroy(out);
    std::rethrow_exception(slot.error());
  }
}

}  // namespace xcs::detail
