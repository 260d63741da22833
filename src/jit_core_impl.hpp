// SPDX-License-Identifier: MIT
// The state behind a jitted function (jit_core's impl): the cache entries, the runs they
// reuse, the counters; shared by jit_core.cpp and staged_call.cpp.
#pragma once

#include <fmt/format.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "run.hpp"
#include "xcs/detail/counter_slot.hpp"
#include "xcs/detail/jit_core.hpp"
#include "xcs/detail/op_table.hpp"
#include "xcs/detail/trace_context.hpp"

namespace xcs::detail {

/// The runs one signature's calls reuse: one kept without a lock (the common case of one
/// call at a time), a few more in a list.
class run_pool {
 public:
  run_pool() = default;
  run_pool(const run_pool&) = delete;
  run_pool& operator=(const run_pool&) = delete;
  ~run_pool() {
    delete cached_.load(std::memory_order_acquire);
    for (run* r : free_) delete r;
  }
  template <class Make>
  run* take(Make make) {
    if (run* r = cached_.exchange(nullptr, std::memory_order_acquire)) return r;
    {
      std::lock_guard lock(mutex_);
      if (!free_.empty()) {
        run* r = free_.back();
        free_.pop_back();
        return r;
      }
    }
    return make();
  }
  /// Takes `r` back, or, if nodes of its call still run (an early end), leaves it to the
  /// reaper with `keep` (what they may use).
  void give(run* r, std::shared_ptr<const void> keep = nullptr) noexcept {
    if (r->leave_behind(std::move(keep))) return;
    r->destroy_results();
    run* empty = nullptr;
    if (cached_.compare_exchange_strong(empty, r, std::memory_order_release)) return;
    try {
      std::lock_guard lock(mutex_);
      // Keep a few runs: enough for the threads that call one signature at once.
      if (free_.size() < 16) {
        free_.push_back(r);
        return;
      }
    } catch (...) {
    }
    delete r;
  }

 private:
  std::atomic<run*> cached_{nullptr};
  std::mutex mutex_;  // guards free_
  std::vector<run*> free_;
};

/// One signature's cache slot: how its calls run.
struct cache_entry {
  std::mutex mutex;  // with ready_cv: for threads that wait for the trace
  std::condition_variable ready_cv;
  /// Set (release) once `kind` and the fields below are final; read (acquire) on every call.
  std::atomic<bool> ready{false};
  /// How calls run. Final once `ready`, except that a staged signature whose first call
  /// recorded no node becomes direct (release; `cause` and `reason` are written before).
  std::atomic<call_kind> kind{call_kind::direct};
  // Written once before `ready`, read-only after.
  std::shared_ptr<const plan> compiled;
  result_recipe recipe;
  std::vector<op_counters*> counters;                  // per plan node: its op's counters, or null
  fallback_cause cause = fallback_cause::untraceable;  // direct: why, in short
  std::string reason;                                  // direct: why, in words
  run_pool runs;                               // declared after `compiled`: a plan's runs go first
  std::atomic<std::uint32_t> staged_nodes{0};  // relaxed: nodes of the last staged call
  /// A staged call's trace buffers, given back cleared for the next staged call (or null).
  std::atomic<trace_output*> spare_trace{nullptr};
  /// Relaxed: LRU hint, written on every call, so on a line of its own.
  alignas(64) std::atomic<std::uint64_t> last_use{0};

  cache_entry() = default;
  cache_entry(const cache_entry&) = delete;
  cache_entry& operator=(const cache_entry&) = delete;
  ~cache_entry() { delete spare_trace.load(std::memory_order_acquire); }
};

inline constexpr const char* kOutOfMemory = "out of memory while tracing or compiling";

inline bool env_flag(const char* name) {
  const char* v = std::getenv(name);
  return v && *v && std::strcmp(v, "0") != 0;
}

/// One line on stderr when XCS_LOG is set; the line is built only then.
template <class MakeLine>
void log(MakeLine&& make_line) noexcept {
  if (!jit_core::log_enabled()) return;
  try {
    std::string line = make_line();
    std::fprintf(stderr, "[xcs] %s\n", line.c_str());
  } catch (...) {
  }
}

/// The counters a call updates, one set per counter slot (counter_slot.hpp), each on its own
/// cache line: a thread that holds a slot adds to its set with a plain load and store. Relaxed:
/// read only for reporting, as sums.
struct alignas(64) call_counters {
  std::atomic<std::uint64_t> calls{0}, fallback_calls{0}, plan_runs{0}, staged_calls{0}, syncs{0},
      serial_reads{0}, op_ns{0}, wall_ns{0};
};

/// This thread's set of `shards` (one per counter slot) and how to add to it.
struct my_counters {
  call_counters& set;
  std::uint32_t slot;
  void add(std::atomic<std::uint64_t> call_counters::*field, std::uint64_t n) noexcept {
    add_in_slot(set.*field, n, slot);
  }
};

struct jit_core::impl {
  call_counters shards[kCounterSlots];
  my_counters mine() noexcept {
    const std::uint32_t slot = counter_slot();
    return {shards[slot], slot};
  }
  template <class Field>
  std::uint64_t sum(Field field) const noexcept {
    std::uint64_t t = 0;
    for (const call_counters& c : shards) t += (c.*field).load(std::memory_order_relaxed);
    return t;
  }
  // Counters of rare events: relaxed, read only for reporting.
  std::atomic<std::uint64_t> traces{0}, retraces{0}, evictions{0}, deadline_exceeded_calls{0},
      cancelled_calls{0};
  std::atomic<bool> optimized{false};
  std::atomic<bool> serial_read_named{false};  // the first serial read's line is taken

  mutable std::shared_mutex cache_mutex;  // guards map, capacity, last_sig
  std::unordered_map<signature, std::shared_ptr<cache_entry>> map;
  std::size_t capacity = default_capacity;
  std::optional<signature> last_sig;

  mutable std::mutex info_mutex;  // guards the fields below
  std::string fallback_reason;
  bool out_of_memory = false;  // the last fallback ran out of memory (reason: a constant)
  std::string retrace_reason;
  std::string staged_text;  // the last staged signature's read, without its source line
  code_site staged_site;
  std::string serial_text;  // the first serial read, without its source line
  std::string serial_advice;
  code_site serial_site;
  // The last plan's or staged call's shape: relaxed, each written only when it changes, so
  // that staged calls of one shape write nothing here.
  std::atomic<std::size_t> nodes{0}, groups{0}, widest{0}, critical{0};
  std::atomic<double> estimated{1.0};
  static void set(std::atomic<std::size_t>& field, std::size_t v) noexcept {
    if (field.load(std::memory_order_relaxed) != v) field.store(v, std::memory_order_relaxed);
  }
  op_table ops;

  void evict_to(std::size_t n);  // with cache_mutex held: drops LRU entries down to n
  std::shared_ptr<cache_entry> find_or_add(const signature& sig, std::uint64_t now, bool& fresh);
  /// Publishes how the entry's calls run and wakes the callers waiting for its trace.
  void publish(cache_entry& e, call_kind kind);
  /// Counts a drained staged call of `nodes` nodes (as a fallback if it `falls_back`).
  void record_staged(const run& r, std::size_t nodes, bool falls_back) noexcept;
  void forget(const signature& sig, const cache_entry& e) noexcept;
};

}  // namespace xcs::detail
