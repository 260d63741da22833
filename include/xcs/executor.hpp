// SPDX-License-Identifier: MIT
// The process-wide thread pool that runs every plan.
#pragma once

namespace xcs {

/// Sets the number of CPU worker threads. Before the pool starts, this only records the
/// number; afterwards it replaces the workers, waiting for those running to finish their
/// current work. The default is `XCS_THREADS` from the environment, else one less than the
/// number of CPUs this process may use (xcs::available_cpus(), at least one): the calling thread
/// runs nodes too.
/// Throws xcs::error for 0 or when called from a worker thread.
///
/// Blocking ops are not bound by this number: they move to the blocking lane (see
/// xcs::blocking), and workers stuck in ops that do not use the CPU are replaced.
void set_thread_count(unsigned n);

/// The number of CPU worker threads: configured (before the pool starts), else those whose
/// threads actually started.
unsigned thread_count();

/// The number of CPUs this process may actually use, at least 1: the CPUs in its affinity
/// mask (sched_getaffinity, as `taskset` sets it), capped by a CPU quota of its cgroup (v2
/// `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`, rounded up; the lowest quota on
/// the path up to the root counts), as a container limit sets it. Reads the OS each call;
/// thread-safe, never throws.
///
///   // under `taskset -c 0` or `docker run --cpus=1`:
///   unsigned n = xcs::available_cpus();  // 1
///   // default workers: n - 1, at least 1
unsigned available_cpus() noexcept;

/// Sets the most threads the blocking lane may have alive at once (default 1024). Blocking ops
/// (xcs::blocking, or seen waiting by the pool's monitor) run on lane threads, made as needed
/// on top of the CPU workers; once `n` are alive, further blocking ops wait for one of them to
/// finish its op. A lane thread idle for 500 ms retires, so the lane shrinks back after a
/// burst. Lowering the limit takes effect as threads finish their current op; raising it gives
/// waiting ops a thread at once. Throws xcs::error for 0. Thread-safe; may be called before or
/// after the lane starts, and a child after fork() keeps the setting.
///
///   xcs::set_blocking_thread_limit(64);  // at most 64 requests in flight
///   auto fetch_all = xcs::jit(...);      // 200 blocking fetches: 64 at a time
void set_blocking_thread_limit(unsigned n);

/// The limit set by xcs::set_blocking_thread_limit(), 1024 by default. Never throws.
unsigned blocking_thread_limit() noexcept;

/// True once some plan needed the pool. Functions that only fall back, or whose graphs have
/// no parallelism, never start it.
bool pool_started() noexcept;

}  // namespace xcs
