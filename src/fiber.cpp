// SPDX-License-Identifier: MIT
// Fibers for CPU workers.
#include "fiber.hpp"

#include <boost/context/protected_fixedsize_stack.hpp>
#include <thread>

namespace xcs::detail {
namespace {

/// User ops run on these stacks; 1 MiB as marl does, committed by the OS only as it is used,
/// with a guard page so an overflow faults instead of corrupting memory.
constexpr std::size_t kStackBytes = 1 << 20;

thread_local fiber_worker* t_worker = nullptr;
thread_local bool t_on_main = true;  // which context of this thread runs now

}  // namespace

fiber_worker::fiber_worker(std::function<void()> loop, std::function<void()> on_ready)
    : loop_(std::move(loop)), on_ready_(std::move(on_ready)) {
  t_worker = this;
  t_on_main = true;
}

fiber_worker::~fiber_worker() {
  // Spare loops are suspended in run_ready/return_to_main; destroying them unwinds their
  // stacks (Boost.Context's forced_unwind), which passes through no noexcept frame.
  spare_.clear();
  t_worker = nullptr;
}

fiber_worker* fiber_worker::current() noexcept { return t_worker; }

bool fiber_worker::enabled() noexcept {
#if defined(XCS_SANITIZE_ADDRESS) || defined(XCS_SANITIZE_THREAD)
  return false;
#else
  return true;
#endif
}

bool fiber_worker::on_main() const noexcept { return t_on_main; }

boost::context::fiber fiber_worker::take_loop() {
  if (!spare_.empty()) {
    boost::context::fiber f = std::move(spare_.back());
    spare_.pop_back();
    return f;
  }
  if (main_spare_) return std::move(main_spare_);
  return boost::context::fiber(
      std::allocator_arg, boost::context::protected_fixedsize_stack(kStackBytes),
      [this](boost::context::fiber&& from) {
        (void)from;  // what the switching context's ontop function returned: nothing
        t_on_main = false;
        loop_();
        // The worker stops: return_to_main() left the thread's own stack in main_spare_.
        return std::move(main_spare_);
      });
}

void fiber_worker::suspend(fiber_waiter& w) {
  bool was_main = t_on_main;
  boost::context::fiber next = take_loop();
  ++suspended_;
  std::move(next).resume_with([&w, this](boost::context::fiber&& me) {
    // Runs on the loop context, after the switch: `me` is the context that suspends.
    w.cont = std::move(me);
    if (w.state.exchange(1, std::memory_order_acq_rel) == 2) {
      // Signalled before it got here: ready at once.
      push_ready(std::move(w.cont));
    }
    return boost::context::fiber{};
  });
  // Resumed by run_ready on this thread.
  --suspended_;
  t_on_main = was_main;
}

void fiber_worker::signal(fiber_waiter& w) noexcept {
  fiber_worker* fw = w.worker;
  if (w.state.exchange(2, std::memory_order_acq_rel) != 1) return;  // not suspended yet
  try {
    fw->push_ready(std::move(w.cont));
  } catch (...) {
    std::terminate();  // a lost context would hang its call; out of memory here is fatal
  }
}

void fiber_worker::push_ready(boost::context::fiber f) {
  {
    std::lock_guard lock(ready_mutex_);
    ready_.push_back(std::move(f));
  }
  ready_count_.fetch_add(1, std::memory_order_release);
  if (on_ready_) on_ready_();
}

void fiber_worker::run_ready() {
  boost::context::fiber next;
  {
    std::lock_guard lock(ready_mutex_);
    if (ready_.empty()) return;
    next = std::move(ready_.back());
    ready_.pop_back();
  }
  ready_count_.fetch_sub(1, std::memory_order_relaxed);
  bool was_main = t_on_main;
  std::move(next).resume_with([this, was_main](boost::context::fiber&& me) {
    if (was_main) {
      main_spare_ = std::move(me);
    } else {
      spare_.push_back(std::move(me));
    }
    return boost::context::fiber{};
  });
  t_on_main = was_main;
}

void fiber_worker::return_to_main() {
  if (t_on_main || !main_spare_) return;
  std::move(main_spare_).resume_with([this](boost::context::fiber&& me) {
    spare_.push_back(std::move(me));
    return boost::context::fiber{};
  });
  t_on_main = false;  // not reached while the worker stops: the main context exits instead
}

}  // namespace xcs::detail
