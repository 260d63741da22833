// SPDX-License-Identifier: MIT
// The timer thread: a binary heap of pending timers in reused slots, and the one thread that
// sleeps until the earliest of them and runs it.
#include "timer.hpp"

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#include <pthread.h>
#include <sys/prctl.h>

namespace xcs::detail {
namespace {

// An id is a serial number above the timer's slot index plus 1 (so no id is 0). cancel_timer
// finds the slot from the id in O(1) and knows the id is still pending if the slot holds it.
constexpr int kSlotBits = 24;
constexpr std::uint64_t kSlotMask = (std::uint64_t{1} << kSlotBits) - 1;
/// Timers pending at once: 16 million, far beyond any use (each slot is 48 bytes).
constexpr std::size_t kMaxSlots = kSlotMask;
constexpr std::uint32_t kNotQueued = ~std::uint32_t{0};

/// Serial numbers of ids. Process-wide and never reset, not even in a child after fork(), so
/// that an id that ran, or one of the parent's, never names a later timer: the 40 bits left
/// above the slot last for 10^12 timers. Relaxed: only uniqueness matters.
std::atomic<std::uint64_t> g_serial{0};
/// Bumped in a child after fork() (see timer_epoch()).
std::atomic<std::uint64_t> g_epoch{0};
thread_local bool t_on_timer_thread = false;

struct timer_slot {
  steady_time when;
  std::uint64_t id = 0;  // 0 while the slot is free
  timer_fn fn = nullptr;
  void* context = nullptr;
  std::uint64_t arg = 0;
  std::uint32_t heap_pos = kNotQueued;
};

/// The timers and their thread. Allocated once and never freed, so that timers added during
/// or after static destruction still work and the thread never sees it go; replaced (leaked)
/// in a child after fork().
struct timer_state {
  std::mutex mutex;              // guards everything below
  std::condition_variable wake;  // the thread waits here for an earlier first timer
  std::condition_variable ran;   // cancel_timer waits here for the running callback to return
  /// Slots are reused through free_slots, so that a process with as many timers pending as
  /// before allocates nothing: heap and free_slots always have room for every slot.
  std::vector<timer_slot> slots;
  std::vector<std::uint32_t> free_slots;
  /// Indices of pending slots: a binary min-heap on (when, id), so timers due together run in
  /// the order they were added.
  std::vector<std::uint32_t> heap;
  std::uint64_t running = 0;  // the id whose callback runs now, 0 if none
  std::uint32_t cancel_waiters = 0;
  bool thread_started = false;
};

std::atomic<timer_state*> g_timer{nullptr};

void forget_timer_after_fork() noexcept {
  // The parent's timer thread does not exist here and its lock may be held: leak the state.
  g_timer.store(nullptr, std::memory_order_relaxed);
  g_epoch.fetch_add(1, std::memory_order_relaxed);
  t_on_timer_thread = false;  // fork() from a callback: this thread is not the child's timer
}

// Registered here rather than from pool.cpp's fork handler like the lane's and the monitor's:
// libxcs is a static library, and a program that uses timers (a rate limiter's direct calls)
// without a plan links no pool.
[[maybe_unused]] const int g_fork_handler =
    pthread_atfork(nullptr, nullptr, forget_timer_after_fork);

timer_state& the_timer() {
  if (timer_state* t = g_timer.load(std::memory_order_acquire)) return *t;
  auto* fresh = new timer_state;
  timer_state* expected = nullptr;
  if (g_timer.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) return *fresh;
  delete fresh;
  return *expected;
}

bool earlier(const timer_state& t, std::uint32_t a, std::uint32_t b) noexcept {
  const timer_slot& x = t.slots[a];
  const timer_slot& y = t.slots[b];
  return x.when < y.when || (x.when == y.when && x.id < y.id);
}

void place(timer_state& t, std::uint32_t pos, std::uint32_t slot) noexcept {
  t.heap[pos] = slot;
  t.slots[slot].heap_pos = pos;
}

void sift_up(timer_state& t, std::uint32_t pos) noexcept {
  const std::uint32_t slot = t.heap[pos];
  while (pos > 0) {
    std::uint32_t parent = (pos - 1) / 2;
    if (!earlier(t, slot, t.heap[parent])) break;
    place(t, pos, t.heap[parent]);
    pos = parent;
  }
  place(t, pos, slot);
}

void sift_down(timer_state& t, std::uint32_t pos) noexcept {
  const std::uint32_t slot = t.heap[pos];
  const auto n = static_cast<std::uint32_t>(t.heap.size());
  for (;;) {
    std::uint32_t child = 2 * pos + 1;
    if (child >= n) break;
    if (child + 1 < n && earlier(t, t.heap[child + 1], t.heap[child])) ++child;
    if (!earlier(t, t.heap[child], slot)) break;
    place(t, pos, t.heap[child]);
    pos = child;
  }
  place(t, pos, slot);
}

/// Takes the slot at heap position `pos` off the heap and frees it.
void remove_at(timer_state& t, std::uint32_t pos) noexcept {
  const std::uint32_t slot = t.heap[pos];
  const std::uint32_t last = t.heap.back();
  t.heap.pop_back();
  if (pos < t.heap.size()) {
    place(t, pos, last);
    sift_down(t, pos);
    sift_up(t, t.slots[last].heap_pos);
  }
  timer_slot& s = t.slots[slot];
  s.id = 0;
  s.heap_pos = kNotQueued;
  t.free_slots.push_back(slot);  // cannot throw: room for every slot
}

/// Grows `v` to hold `n` with doubling, so that growing one at a time stays amortized O(1).
template <class T>
void reserve_for(std::vector<T>& v, std::size_t n) {
  if (v.capacity() < n) v.reserve(std::max(n, 2 * v.capacity()));
}

/// A free slot, made if there is none; on a throw nothing changed.
std::uint32_t take_slot(timer_state& t) {
  if (t.free_slots.empty()) {
    const std::size_t n = t.slots.size() + 1;
    if (n > kMaxSlots) throw std::bad_alloc();
    // heap and free_slots first: once slots has grown, the pushes below must not throw.
    reserve_for(t.heap, n);
    reserve_for(t.free_slots, n);
    reserve_for(t.slots, n);
    t.slots.emplace_back();
    t.free_slots.push_back(static_cast<std::uint32_t>(n - 1));
  }
  const std::uint32_t slot = t.free_slots.back();
  t.free_slots.pop_back();
  return slot;
}

void timer_loop(timer_state& t) {
  t_on_timer_thread = true;
  // The kernel may delay a sleeping thread's wake-up by its timer slack (50 us by default) to
  // batch wake-ups; deadlines and rate limits want their time. Best effort.
  prctl(PR_SET_TIMERSLACK, 1UL, 0UL, 0UL, 0UL);
  std::unique_lock lock(t.mutex);
  for (;;) {
    if (t.heap.empty()) {
      t.wake.wait(lock);
      continue;
    }
    // A copy: add_timer may move the slots while this thread waits.
    const steady_time when = t.slots[t.heap[0]].when;
    if (std::chrono::steady_clock::now() < when) {
      t.wake.wait_until(lock, when);
      continue;
    }
    const timer_slot due = t.slots[t.heap[0]];
    remove_at(t, 0);
    t.running = due.id;
    lock.unlock();
    due.fn(due.context, due.arg);
    lock.lock();
    t.running = 0;
    if (t.cancel_waiters > 0) t.ran.notify_all();
  }
}

}  // namespace

std::uint64_t add_timer(steady_time when, timer_fn fn, void* context, std::uint64_t arg) {
  timer_state& t = the_timer();
  bool first;
  std::uint64_t id;
  {
    std::lock_guard lock(t.mutex);
    if (!t.thread_started) {
      // Detached: the thread runs until the process ends, past static destruction.
      std::thread([&t] { timer_loop(t); }).detach();
      t.thread_started = true;
    }
    const std::uint32_t slot = take_slot(t);
    id = ((g_serial.fetch_add(1, std::memory_order_relaxed) + 1) << kSlotBits) | (slot + 1);
    timer_slot& s = t.slots[slot];
    s.when = when;
    s.id = id;
    s.fn = fn;
    s.context = context;
    s.arg = arg;
    const auto pos = static_cast<std::uint32_t>(t.heap.size());
    t.heap.push_back(slot);  // cannot throw: room for every slot
    sift_up(t, pos);
    first = s.heap_pos == 0;
  }
  // Only a new first timer changes when the thread must wake. After the unlock: the state is
  // never freed.
  if (first) t.wake.notify_one();
  return id;
}

bool cancel_timer(std::uint64_t id) noexcept {
  timer_state* t = g_timer.load(std::memory_order_acquire);
  if (!t) return false;
  std::unique_lock lock(t->mutex);
  // For id 0 (or one without a slot part) the index wraps to far beyond any slot.
  const std::uint64_t slot = (id & kSlotMask) - 1;
  if (slot < t->slots.size() && t->slots[slot].id == id) {
    remove_at(*t, t->slots[slot].heap_pos);
    return true;
  }
  if (t->running == id && id != 0 && !t_on_timer_thread) {
    ++t->cancel_waiters;
    t->ran.wait(lock, [&] { return t->running != id; });
    --t->cancel_waiters;
  }
  return false;
}

bool timer_thread_started() noexcept {
  timer_state* t = g_timer.load(std::memory_order_acquire);
  if (!t) return false;
  std::lock_guard lock(t->mutex);
  return t->thread_started;
}

std::uint64_t timer_epoch() noexcept { return g_epoch.load(std::memory_order_relaxed); }

}  // namespace xcs::detail
