// SPDX-License-Identifier: MIT
// Fibers for CPU workers, with each stack switch told to ASan and TSan when the build uses
// them (found from the compiler's own macros, so a user's -fsanitize flags count too).
#include "fiber.hpp"

#include "xcs/detail/call_limits.hpp"

#include <boost/context/protected_fixedsize_stack.hpp>
#include <exception>

#if defined(__has_feature)  // clang
#if __has_feature(address_sanitizer)
#define XCS_FIBER_ASAN 1
#endif
#if __has_feature(thread_sanitizer)
#define XCS_FIBER_TSAN 1
#endif
#endif
#if defined(__SANITIZE_ADDRESS__) && !defined(XCS_FIBER_ASAN)  // gcc
#define XCS_FIBER_ASAN 1
#endif
#if defined(__SANITIZE_THREAD__) && !defined(XCS_FIBER_TSAN)
#define XCS_FIBER_TSAN 1
#endif

#if defined(XCS_FIBER_ASAN)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#include <sanitizer/lsan_interface.h>
#endif
#if defined(XCS_FIBER_TSAN)
#include <sanitizer/tsan_interface.h>
#endif

namespace xcs::detail {
namespace {

/// User ops run on these stacks; 1 MiB as marl does, committed by the OS only as it is used,
/// with a guard page so an overflow faults instead of corrupting memory.
constexpr std::size_t kStackBytes = 1 << 20;

thread_local fiber_worker* t_worker = nullptr;
std::atomic<std::uint64_t> g_suspensions{0};  // relaxed: a statistic

/// Boost.Context's guarded stacks, noting in the fiber's record where its stack lies.
class recorded_stack {
 public:
  explicit recorded_stack(fiber_stack& record) noexcept : record_(&record) {}

  boost::context::stack_context allocate() {
    boost::context::stack_context s = stacks_.allocate();
    record_->bottom = static_cast<char*>(s.sp) - s.size;
    record_->size = s.size;
#if defined(XCS_FIBER_ASAN)
    // LeakSanitizer scans a thread's current stack only: what a suspended fiber's frames
    // point to would look leaked. (The guard page is skipped: LSan reads readable maps only.)
    __lsan_register_root_region(record_->bottom, record_->size);
#endif
    return s;
  }
  void deallocate(boost::context::stack_context& s) noexcept {
#if defined(XCS_FIBER_ASAN)
    void* bottom = static_cast<char*>(s.sp) - s.size;
    __lsan_unregister_root_region(bottom, s.size);
    // Frames that never returned (Boost's entry frame) may leave poisoned redzones behind;
    // whatever is mapped here next must not inherit them.
    ASAN_UNPOISON_MEMORY_REGION(bottom, s.size);
#endif
    stacks_.deallocate(s);
  }

 private:
  boost::context::protected_fixedsize_stack stacks_{kStackBytes};
  fiber_stack* record_;  // outlives the fiber: owned by the fiber_worker
};

}  // namespace

fiber_worker::fiber_worker(std::function<void()> loop, std::function<void()> on_ready)
    : loop_(std::move(loop)), on_ready_(std::move(on_ready)) {
#if defined(XCS_FIBER_TSAN)
  main_stack_.tsan_fiber = __tsan_get_current_fiber();
#endif
  t_worker = this;
}

fiber_worker::~fiber_worker() {
  // Each spare loop is suspended in run_ready() or return_to_main(), inside the worker loop.
  // It is ended by a switch of our own that throws `unwind` on its stack, rather than by
  // Boost.Context's unwinding in ~fiber, which would switch stacks behind the sanitizers'
  // backs. Its frames hold no lock and nothing that outlives the worker.
  while (!spare_.empty()) {
    fiber_context spare = std::move(spare_.back());
    spare_.pop_back();
    [[maybe_unused]] fiber_stack* dead = spare.stack;
    switch_to(std::move(spare), [this](fiber_context&& me) {
      unwound_by_ = std::move(me);
      throw unwind{};
    });
    // Back from loop_main, which ended the fiber: its stack is freed.
    end_switch();
#if defined(XCS_FIBER_TSAN)
    __tsan_destroy_fiber(dead->tsan_fiber);
#endif
  }
#if defined(XCS_FIBER_ASAN)
  if (main_stack_scanned_) __lsan_unregister_root_region(main_stack_.bottom, main_stack_.size);
#endif
  t_worker = nullptr;
}

fiber_worker* fiber_worker::current() noexcept { return t_worker; }

std::uint64_t fiber_worker::suspensions() noexcept {
  return g_suspensions.load(std::memory_order_relaxed);
}

bool fiber_worker::on_main() const noexcept { return running_ == &main_stack_; }

template <class OnArrival>
void fiber_worker::switch_to(fiber_context&& to, OnArrival&& on_arrival) {
  begin_switch(to.stack, false);
  fiber_stack* from = left_;
  std::move(to.fiber).resume_with([this, from, &on_arrival](boost::context::fiber&& me) {
    // On `to`'s stack; `on_arrival` lives on the stack just left, which stays put meanwhile.
    end_switch();
    on_arrival(fiber_context{std::move(me), from});
    return boost::context::fiber{};
  });
  // Resumed: whoever switched here ran end_switch() on arrival.
}

void fiber_worker::begin_switch(fiber_stack* to, bool leaving_for_good) noexcept {
  left_ = running_;
  running_ = to;
#if defined(XCS_FIBER_ASAN)
  // A context that ends passes no fake-stack slot, so ASan frees its fake stack.
  __sanitizer_start_switch_fiber(leaving_for_good ? nullptr : &left_->fake_stack, to->bottom,
                                 to->size);
#endif
#if defined(XCS_FIBER_TSAN)
  // Flags 0: synchronizing, so what the context left did happens before what `to` does next
  // (the two hand each other contexts and waiters).
  __tsan_switch_to_fiber(to->tsan_fiber, 0);
#endif
  (void)leaving_for_good;
}

void fiber_worker::end_switch() noexcept {
#if defined(XCS_FIBER_ASAN)
  // Also tells where the stack left lies: how the thread's own stack is learned.
  __sanitizer_finish_switch_fiber(running_->fake_stack, &left_->bottom, &left_->size);
  if (left_ == &main_stack_ && !main_stack_scanned_) {
    // While the thread runs on a fiber, LeakSanitizer scans that fiber's stack, not this one.
    __lsan_register_root_region(main_stack_.bottom, main_stack_.size);
    main_stack_scanned_ = true;
  }
#endif
}

fiber_context fiber_worker::take_loop() {
  if (!spare_.empty()) {
    fiber_context c = std::move(spare_.back());
    spare_.pop_back();
    return c;
  }
  if (main_spare_) return std::move(main_spare_);
  return new_loop();
}

fiber_context fiber_worker::new_loop() {
  // Room first, so that the push_back below cannot throw once the fiber exists.
  if (stacks_.size() == stacks_.capacity()) stacks_.reserve(2 * stacks_.size() + 1);
  auto record = std::make_unique<fiber_stack>();
  fiber_stack* self = record.get();
  boost::context::fiber f(
      std::allocator_arg, recorded_stack(*self),
      [this](boost::context::fiber&& from) { return loop_main(std::move(from)); });
#if defined(XCS_FIBER_TSAN)
  self->tsan_fiber = __tsan_create_fiber(0);
#endif
  stacks_.push_back(std::move(record));
  return {std::move(f), self};
}

boost::context::fiber fiber_worker::loop_main(boost::context::fiber&& from) {
  (void)from;  // what the switching context's on_arrival left: nothing
  try {
    loop_();
  } catch (const unwind&) {
  }
  // A loop context ends only when ~fiber_worker unwinds it (the worker loop returns on the
  // thread's own stack): back to that context, which frees this stack.
  fiber_context back = std::move(unwound_by_);
  if (!back) std::terminate();
  begin_switch(back.stack, true);
  return std::move(back.fiber);
}

void fiber_worker::suspend(fiber_waiter& w) {
  fiber_context next = take_loop();
  // What this context runs for (its trace, its call's limits) goes with it: the work the
  // worker turns to meanwhile starts clean.
  const fiber_locals mine = fiber_locals::take();
  ++suspended_;
  g_suspensions.fetch_add(1, std::memory_order_relaxed);
  switch_to(std::move(next), [&w, this](fiber_context&& me) {
    // `me` is the context that suspends.
    w.cont = std::move(me);
    if (w.state.exchange(waiter_state::suspended, std::memory_order_acq_rel) ==
        waiter_state::signalled) {
      // Signalled before it got here: ready at once.
      push_ready(std::move(w.cont));
    }
  });
  // Resumed by run_ready on this thread.
  --suspended_;
  fiber_locals::put(mine);
}

void fiber_worker::signal(fiber_waiter& w) noexcept {
  fiber_worker* fw = w.worker;
  if (w.state.exchange(waiter_state::signalled, std::memory_order_acq_rel) !=
      waiter_state::suspended) {
    return;  // not suspended yet
  }
  try {
    fw->push_ready(std::move(w.cont));
  } catch (...) {
    std::terminate();  // a lost context would hang its call; out of memory here is fatal
  }
}

void fiber_worker::push_ready(fiber_context c) {
  {
    std::lock_guard lock(ready_mutex_);
    ready_.push_back(std::move(c));
  }
  ready_count_.fetch_add(1, std::memory_order_release);
  if (on_ready_) on_ready_();
}

void fiber_worker::run_ready() {
  fiber_context next;
  {
    std::lock_guard lock(ready_mutex_);
    if (ready_.empty()) return;
    next = std::move(ready_.back());
    ready_.pop_back();
  }
  ready_count_.fetch_sub(1, std::memory_order_relaxed);
  switch_to(std::move(next), [this](fiber_context&& me) {
    if (me.stack == &main_stack_) {
      main_spare_ = std::move(me);
    } else {
      spare_.push_back(std::move(me));
    }
  });
}

void fiber_worker::return_to_main() {
  if (on_main() || !main_spare_) return;
  switch_to(std::move(main_spare_),
            [this](fiber_context&& me) { spare_.push_back(std::move(me)); });
  // Not reached while the worker stops: the thread's own stack exits, and unwinds this one.
}

}  // namespace xcs::detail
