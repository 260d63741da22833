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

/// Sets the most threads the blocking lane runs at once (default 1024). Each instance of a
/// blocking op (xcs::blocking, or seen waiting) holds a lane thread while it waits; instances
/// beyond the limit wait for a thread, so a call with more waiting ops than this runs in waves.
/// An async op (xcs::async_op) holds no thread while it waits and is not bound by it. A lower
/// limit applies to threads started from then on; threads beyond it leave once idle for 2 s.
/// Throws xcs::error for 0. Thread-safe.
void set_blocking_lane_limit(unsigned n);
/// The current limit of the blocking lane.
unsigned blocking_lane_limit() noexcept;
/// The most blocking-lane threads alive at once so far in this process (also in
/// `stats().blocking_lane_peak`).
unsigned blocking_lane_peak() noexcept;

/// True once some plan needed the pool. Functions that only fall back, or whose graphs have
/// no parallelism, never start it.
bool pool_started() noexcept;

}  // namespace xcs
