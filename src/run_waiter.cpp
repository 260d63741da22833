// SPDX-License-Identifier: MIT
// The owner's park/wake handshake.
#include "run_waiter.hpp"

#include <thread>

#include "fiber.hpp"
#include "monitor.hpp"

namespace xcs::detail {

void run_waiter::park(bool (*keep_waiting)(void*) noexcept, void* context) noexcept {
  park_watch idle;  // runs no op meanwhile
  std::uint32_t e = epoch_.load(std::memory_order_seq_cst);
  parked_.store(true, std::memory_order_seq_cst);
  if (keep_waiting(context)) {
    if (fiber_worker* fw = fiber_worker::current()) {
      // On a CPU worker: suspend this fiber so the worker runs other work meanwhile.
      fiber_waiter w;
      w.worker = fw;
      fiber_waiter_.store(&w, std::memory_order_seq_cst);
      if (epoch_.load(std::memory_order_seq_cst) == e) {
        fw->suspend(w);  // wake() took fiber_waiter_ and signalled us
      } else if (fiber_waiter_.exchange(nullptr, std::memory_order_seq_cst) != &w) {
        // A waker took `w` and is about to signal it; it must not find it gone.
        while (w.state.load(std::memory_order_acquire) != waiter_state::signalled)
          std::this_thread::yield();
      }
    } else {
      idle.thread_sleeps();
      epoch_.wait(e, std::memory_order_seq_cst);
    }
  }
  parked_.store(false, std::memory_order_relaxed);
}

void run_waiter::wake() noexcept {
  epoch_.fetch_add(1, std::memory_order_seq_cst);
  if (fiber_waiter* w = fiber_waiter_.exchange(nullptr, std::memory_order_seq_cst)) {
    fiber_worker::signal(*w);
  } else {
    epoch_.notify_one();
  }
}

}  // namespace xcs::detail
