// SPDX-License-Identifier: MIT
// Participant slots and the monitor thread.
#include "monitor.hpp"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <memory>
#include <mutex>
#include <new>
#include <thread>

#include "blocking_classifier.hpp"
#include "blocking_lane.hpp"
#include "clock.hpp"
#include "xcs/executor.hpp"

namespace xcs::detail {

/// Assumed cache line size (std::hardware_destructive_interference_size is not stable across
/// compilers, and GCC warns about using it in a layout).
constexpr std::size_t kCacheLine = 64;

/// What a participating thread (a worker, or a caller running nodes) is doing, published for
/// the monitor. One per thread, a whole number of cache lines, so threads do not share lines;
/// and what the thread writes (once per node) is on another line than what the monitor writes
/// (once per window), so neither keeps taking the other's line away.
struct alignas(kCacheLine) participant {
  // --- Written by the thread. Relaxed stores: the monitor reads them with relaxed loads, as
  // a stale read only delays a decision by one tick.
  /// Claimed by a thread (compare-exchange), then `ready` once cpu_clock and tid are set.
  std::atomic<bool> used{false};
  /// Release by the claiming thread after it filled in cpu_clock and tid; the monitor reads
  /// those only after an acquire load of true. Cleared when the thread ends.
  std::atomic<bool> ready{false};
  /// Bumped each time a new thread takes the slot, so the monitor resets its own fields.
  std::atomic<std::uint32_t> generation{0};
  std::atomic<std::uint64_t> seq{0};     // bumped when a node starts and when it ends
  std::atomic<op_runtime*> op{nullptr};  // the op running now, or null
  /// Relaxed too: a thread may claim the slot again while the monitor still looks at it with
  /// the previous thread's `ready`; the monitor sees the new `generation` at its next look,
  /// and one window measured on the new thread's clock only delays a decision by one tick.
  std::atomic<clockid_t> cpu_clock{};
  std::atomic<int> tid{0};

  // --- Written by the monitor.
  /// The monitor classified the node running now as waiting. Cleared by the thread when the
  /// node returns (relaxed: a hint for how many stand-ins to keep). The monitor stores only
  /// changes, so the thread's read at each node's end usually finds the line shared.
  alignas(kCacheLine) std::atomic<bool> waiting{false};
  // Monitor-private.
  std::uint32_t seen_generation = 0;
  int waiting_windows = 0;
  std::uint64_t seen_seq = ~std::uint64_t{0};
  std::int64_t seen_cpu = 0;
  std::int64_t seen_wall = 0;
};

namespace {

constexpr std::size_t kMaxParticipants = 1024;
constexpr auto kMonitorTick = std::chrono::microseconds(500);
/// The monitor sleeps after this long with nothing running.
constexpr std::int64_t kMonitorQuietNs = 200'000'000;

struct slot_table {
  participant slots[kMaxParticipants];
  /// Slots below this index were ever claimed: the monitor looks at no others. Release on
  /// claim, acquire by the monitor.
  std::atomic<std::uint32_t> high{0};
};

/// The monitor thread's state. Never freed (the thread never ends); leaked after fork().
struct monitor_state {
  monitor_client* client = nullptr;
  /// Seq-cst: set before the monitor checks client->has_jobs(); read by wake_monitor() after
  /// the pool opened a run's listing (seq_cst), so one of the two sees the other.
  std::atomic<bool> asleep{false};
  std::mutex mutex;  // guards woken
  std::condition_variable cv;
  bool woken = false;
};

std::atomic<slot_table*> g_table{nullptr};
std::atomic<monitor_state*> g_monitor{nullptr};
/// Owners asleep on their runs (they hold no core). Relaxed: a monitor hint.
std::atomic<std::uint32_t> g_parked_owners{0};
std::atomic<std::uint32_t> g_stand_ins_wanted{0};
participant g_overflow;  // shared by threads beyond kMaxParticipants: never monitored

/// Releases this thread's participant slot when the thread ends.
struct participant_handle {
  participant* slot = nullptr;
  ~participant_handle() {
    if (slot && slot != &g_overflow) {
      slot->op.store(nullptr, std::memory_order_relaxed);
      slot->ready.store(false, std::memory_order_relaxed);
      slot->used.store(false, std::memory_order_release);
    }
  }
};
thread_local participant_handle t_participant;

slot_table* table() noexcept {
  if (slot_table* t = g_table.load(std::memory_order_acquire)) return t;
  auto* fresh = new (std::nothrow) slot_table;
  if (!fresh) return nullptr;
  slot_table* expected = nullptr;
  if (g_table.compare_exchange_strong(expected, fresh, std::memory_order_acq_rel)) return fresh;
  delete fresh;
  return expected;
}

bool claim(participant& p) noexcept {
  bool expected = false;
  if (p.used.load(std::memory_order_relaxed) ||
      !p.used.compare_exchange_strong(expected, true, std::memory_order_acq_rel)) {
    return false;
  }
  p.seq.store(0, std::memory_order_relaxed);
  p.op.store(nullptr, std::memory_order_relaxed);
  clockid_t clock{};
  if (pthread_getcpuclockid(pthread_self(), &clock) != 0) clock = CLOCK_THREAD_CPUTIME_ID;
  p.cpu_clock.store(clock, std::memory_order_relaxed);
  p.tid.store(static_cast<int>(gettid()), std::memory_order_relaxed);
  p.generation.fetch_add(1, std::memory_order_relaxed);
  p.ready.store(true, std::memory_order_release);
  return true;
}

/// This thread's participant slot, claimed on first use.
participant& self() noexcept {
  if (t_participant.slot) return *t_participant.slot;
  if (slot_table* t = table()) {
    for (std::uint32_t i = 0; i < kMaxParticipants; ++i) {
      if (!claim(t->slots[i])) continue;
      std::uint32_t high = t->high.load(std::memory_order_relaxed);
      while (high < i + 1 &&
             !t->high.compare_exchange_weak(high, i + 1, std::memory_order_release)) {
      }
      t_participant.slot = &t->slots[i];
      return t->slots[i];
    }
  }
  t_participant.slot = &g_overflow;
  return g_overflow;
}

void one_stand_in_fewer() noexcept {
  std::uint32_t n = g_stand_ins_wanted.load(std::memory_order_relaxed);
  while (n > 0 && !g_stand_ins_wanted.compare_exchange_weak(n, n - 1, std::memory_order_relaxed)) {
  }
}

std::int64_t cpu_ns(clockid_t c) noexcept {
  timespec ts{};
  if (clock_gettime(c, &ts) != 0) return -1;
  return std::int64_t{ts.tv_sec} * 1'000'000'000 + ts.tv_nsec;
}

/// True if thread `tid` of this process is runnable ('R'): it waits for a core, not for I/O.
bool runnable(int tid) noexcept {
  char path[64];
  std::snprintf(path, sizeof path, "/proc/self/task/%d/stat", tid);
  std::FILE* f = std::fopen(path, "r");
  if (!f) return false;
  char buf[512];
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  // The state follows the command name, which is in parentheses and may contain spaces.
  const char* close = std::strrchr(buf, ')');
  return close && close[1] == ' ' && close[2] == 'R';
}

struct census {
  std::uint32_t running = 0;  // threads in an op, using a core
  std::uint32_t waiting = 0;  // threads in an op, waiting
  bool busy = false;          // some thread runs an op
};

void set_waiting(participant& p, bool waiting) noexcept {
  if (p.waiting.load(std::memory_order_relaxed) != waiting) {
    p.waiting.store(waiting, std::memory_order_relaxed);
  }
}

/// One look at one slot: starts a new window when the thread moved on to another node, and
/// classifies the window when it stayed in one node for a whole window.
void observe(participant& p, std::int64_t now, census& c) noexcept {
  if (!p.ready.load(std::memory_order_acquire)) return;
  std::uint32_t generation = p.generation.load(std::memory_order_relaxed);
  if (generation != p.seen_generation) {
    // Another thread took the slot since the last look: start afresh.
    p.seen_generation = generation;
    p.seen_seq = ~std::uint64_t{0};
    p.waiting_windows = 0;
  }
  op_runtime* op = p.op.load(std::memory_order_relaxed);
  std::uint64_t seq = p.seq.load(std::memory_order_relaxed);
  if (!op) {
    p.seen_seq = ~std::uint64_t{0};
    return;
  }
  c.busy = true;
  if (seq != p.seen_seq) {
    p.seen_seq = seq;
    p.seen_cpu = cpu_ns(p.cpu_clock.load(std::memory_order_relaxed));
    p.seen_wall = now;
    p.waiting_windows = 0;
    set_waiting(p, false);
    ++c.running;
    return;
  }
  std::int64_t wall = now - p.seen_wall;
  if (wall >= kWindowNs) {
    std::int64_t cpu = cpu_ns(p.cpu_clock.load(std::memory_order_relaxed));
    std::int64_t used = cpu < 0 ? -1 : cpu - p.seen_cpu;
    // Reading /proc costs: only when the CPU clock alone says the thread waited.
    bool ready_to_run =
        used_little_cpu(used, wall) && runnable(p.tid.load(std::memory_order_relaxed));
    window_verdict v = classify_window(used, wall, ready_to_run, p.waiting_windows);
    set_waiting(p, v.waiting);
    p.waiting_windows = v.waiting_windows;
    if (v.mark_blocking) op->observed_blocking.store(true, std::memory_order_relaxed);
    p.seen_cpu = cpu;
    p.seen_wall = now;
  }
  if (p.waiting.load(std::memory_order_relaxed)) {
    ++c.waiting;
  } else {
    ++c.running;
  }
}

/// Sleeps until a run is offered (wake_monitor). Returns false at once if one is listed.
bool sleep_until_offered(monitor_state& m) {
  m.asleep.store(true, std::memory_order_seq_cst);
  if (m.client->has_jobs()) {
    m.asleep.store(false, std::memory_order_relaxed);
    return false;
  }
  std::unique_lock lock(m.mutex);
  m.cv.wait(lock, [&] { return m.woken; });
  m.woken = false;
  m.asleep.store(false, std::memory_order_relaxed);
  return true;
}

/// Set (seq_cst) while the monitor looks at the threads' slots, which may name an op: an op's
/// runtime state waits for it to clear (release) before it is freed (wait_for_monitor_pass).
std::atomic<bool> g_observing{false};

void monitor_loop(monitor_state& m) {
  const unsigned cores = xcs::available_cpus();
  std::int64_t last_busy = now_ns();
  for (;;) {
    std::this_thread::sleep_for(kMonitorTick);
    std::int64_t now = now_ns();
    census c;
    if (slot_table* t = g_table.load(std::memory_order_acquire)) {
      g_observing.store(true, std::memory_order_seq_cst);
      std::uint32_t high = t->high.load(std::memory_order_acquire);
      for (std::uint32_t i = 0; i < high; ++i) observe(t->slots[i], now, c);
      g_observing.store(false, std::memory_order_release);
    }
    if (c.busy) last_busy = now;
    std::uint32_t wanted = c.waiting + g_parked_owners.load(std::memory_order_relaxed);
    g_stand_ins_wanted.store(wanted, std::memory_order_relaxed);
    m.client->balance(c.running, wanted, cores);
    if (now - last_busy > kMonitorQuietNs && sleep_until_offered(m)) last_busy = now_ns();
  }
}

}  // namespace

void wait_for_monitor_pass() noexcept {
  while (g_observing.load(std::memory_order_acquire)) std::this_thread::yield();
}

op_watch::op_watch(op_runtime* op) noexcept : slot_(on_blocking_lane() ? nullptr : &self()) {
  if (!slot_) return;
  outer_ = slot_->op.load(std::memory_order_relaxed);
  slot_->seq.store(slot_->seq.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  slot_->op.store(op ? op : outer_, std::memory_order_relaxed);
}

op_watch::~op_watch() {
  if (!slot_) return;
  slot_->seq.store(slot_->seq.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
  slot_->op.store(outer_, std::memory_order_relaxed);
  if (slot_->waiting.load(std::memory_order_relaxed)) {
    // Now rather than at the monitor's next tick, so a stand-in worker leaves promptly.
    slot_->waiting.store(false, std::memory_order_relaxed);
    one_stand_in_fewer();
  }
}

park_watch::park_watch() noexcept
    : slot_(&self()), outer_(slot_->op.exchange(nullptr, std::memory_order_relaxed)) {}

park_watch::~park_watch() {
  if (sleeps_) g_parked_owners.fetch_sub(1, std::memory_order_relaxed);
  slot_->op.store(outer_, std::memory_order_relaxed);
}

void park_watch::thread_sleeps() noexcept {
  if (sleeps_) return;
  sleeps_ = true;
  g_parked_owners.fetch_add(1, std::memory_order_relaxed);
}

bool start_monitor(monitor_client& client) noexcept {
  try {
    auto m = std::make_unique<monitor_state>();
    m->client = &client;
    monitor_state* raw = m.get();
    std::thread([raw] { monitor_loop(*raw); }).detach();
    g_monitor.store(m.release(), std::memory_order_release);  // never freed, see monitor_state
    return true;
  } catch (...) {
    return false;
  }
}

void wake_monitor() noexcept {
  monitor_state* m = g_monitor.load(std::memory_order_acquire);
  if (!m || !m->asleep.load(std::memory_order_seq_cst)) return;
  {
    std::lock_guard lock(m->mutex);
    m->woken = true;
  }
  m->cv.notify_one();
}

std::uint32_t stand_ins_wanted() noexcept {
  return g_stand_ins_wanted.load(std::memory_order_relaxed);
}

void forget_monitor_after_fork() noexcept {
  // The parent's threads do not exist here, and its locks may be held: leak their state.
  g_monitor.store(nullptr, std::memory_order_relaxed);
  g_table.store(nullptr, std::memory_order_relaxed);
  t_participant.slot = nullptr;
  g_parked_owners.store(0, std::memory_order_relaxed);
  g_stand_ins_wanted.store(0, std::memory_order_relaxed);
}

}  // namespace xcs::detail
