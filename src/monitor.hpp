// SPDX-License-Identifier: MIT
// The blocking monitor: each thread that runs nodes publishes which op it runs, and a monitor
// thread notices threads that sit in an op without using the CPU.
#pragma once

#include <cstdint>

#include "xcs/detail/op_runtime.hpp"
#include "xcs/detail/op_watch.hpp"

namespace xcs::detail {

struct participant;

/// Marks the calling thread, the owner of a run, as parked on it: it runs no op meanwhile.
class park_watch {
 public:
  park_watch() noexcept;
  ~park_watch();
  park_watch(const park_watch&) = delete;
  park_watch& operator=(const park_watch&) = delete;

  /// The thread itself goes to sleep (rather than switching to another fiber): it holds no
  /// core until the watch ends, so the monitor may start a stand-in worker.
  void thread_sleeps() noexcept;

 private:
  participant* slot_;
  op_runtime* outer_;
  bool sleeps_ = false;
};

/// An op's runtime state is about to be freed: waits until the monitor is not in the middle of
/// a look at the threads, which may have read a pointer to the op from a thread that has since
/// finished its instance (the look marks ops that block). Rare: once per op's lifetime.
void wait_for_monitor_pass() noexcept;

/// What the monitor asks of the pool. Implemented by the pool; called on the monitor thread.
class monitor_client {
 public:
  /// Once per tick: `running` monitored threads hold a core, `wanted` hold none (they wait in
  /// an op or are parked owners) and `cores` is available_cpus().
  virtual void balance(std::uint32_t running, std::uint32_t wanted, unsigned cores) noexcept = 0;
  /// True while some run is offered to the pool; otherwise the monitor may go to sleep.
  virtual bool has_jobs() noexcept = 0;

 protected:
  ~monitor_client() = default;
};

/// Starts the monitor thread for `client`, which must outlive the process. Returns false if
/// no thread could be started: blocking ops are then found only by their hint.
bool start_monitor(monitor_client& client) noexcept;

/// A run was offered: wake the monitor if it sleeps. Cheap when it does not.
void wake_monitor() noexcept;

/// Stand-in workers the monitor wants now: one per thread it saw waiting in an op or parked.
/// Relaxed: a stale value only delays a stand-in's exit by one job.
std::uint32_t stand_ins_wanted() noexcept;

/// In a child after fork(): forget the parent's slots and monitor (their threads do not exist
/// here); the next start_monitor() starts afresh.
void forget_monitor_after_fork() noexcept;

}  // namespace xcs::detail
