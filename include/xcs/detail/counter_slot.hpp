// SPDX-License-Identifier: MIT
// Counters that each thread adds to without a locked instruction: one slot per thread.
#pragma once

#include <atomic>
#include <cstdint>

namespace xcs::detail {

/// Slots a counter keeps: one per thread that holds one, plus one shared by the threads that
/// found none free (kSharedSlot).
inline constexpr std::uint32_t kCounterSlots = 9;
inline constexpr std::uint32_t kSharedSlot = kCounterSlots - 1;

/// The calling thread's counter slot: an index below kSharedSlot that no other living thread
/// holds (taken at its first call, freed when it exits), or kSharedSlot if every one is held.
/// A slot's counters have one writer at a time: its thread adds with a relaxed load and store,
/// and a thread that takes a freed slot later follows its last holder (the slot mask is
/// released when freed and acquired when taken). Readers sum the slots (relaxed). Thread-safe.
std::uint32_t counter_slot() noexcept;

/// Adds `n` to `c`, the counter of slot `slot`: a plain load and store where the calling
/// thread holds the slot, an atomic add in the shared slot.
inline void add_in_slot(std::atomic<std::uint64_t>& c, std::uint64_t n,
                        std::uint32_t slot) noexcept {
  if (slot == kSharedSlot) {
    c.fetch_add(n, std::memory_order_relaxed);
  } else {
    c.store(c.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
}

}  // namespace xcs::detail
