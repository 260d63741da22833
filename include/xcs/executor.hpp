// SPDX-License-Identifier: MIT
// The process-wide thread pool that runs every plan.
#pragma once

namespace xcs {

/// Sets the number of CPU worker threads. Before the pool starts, this only records the
/// number; afterwards it replaces the workers, waiting for those running to finish their
/// current work. The default is `XCS_THREADS` from the environment, else one less than the
/// number of cores (at least one): the calling thread runs nodes too.
/// Throws xcs::error for 0 or when called from a worker thread.
///
/// Blocking ops are not bound by this number: they move to the blocking lane (see
/// xcs::blocking), and workers stuck in ops that do not use the CPU are replaced.
void set_thread_count(unsigned n);

/// The number of CPU worker threads (configured, or running).
unsigned thread_count();

/// True once some plan needed the pool. Functions that only fall back, or whose graphs have
/// no parallelism, never start it.
bool pool_started() noexcept;

}  // namespace xcs
