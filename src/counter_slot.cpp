// SPDX-License-Identifier: MIT
// Which counter slot each thread holds (see counter_slot.hpp).
#include "xcs/detail/counter_slot.hpp"

namespace xcs::detail {
namespace {

/// Bit i set: slot i is held by a living thread. Acquire when taken, release when freed, so
/// a slot's next holder sees every add of the one before.
std::atomic<std::uint32_t> held_slots{0};

struct slot_holder {
  std::uint32_t slot = kSharedSlot;
  slot_holder() noexcept {
    std::uint32_t mask = held_slots.load(std::memory_order_relaxed);
    for (;;) {
      std::uint32_t free = ~mask & ((1u << kSharedSlot) - 1);
      if (free == 0) return;  // every slot is held: this thread adds atomically
      const auto bit = static_cast<std::uint32_t>(__builtin_ctz(free));
      if (held_slots.compare_exchange_weak(mask, mask | (1u << bit), std::memory_order_acquire,
                                           std::memory_order_relaxed)) {
        slot = bit;
        return;
      }
    }
  }
  ~slot_holder() {
    if (slot == kSharedSlot) return;
    held_slots.fetch_and(~(1u << slot), std::memory_order_release);
    // A jitted call made by a later thread_local destructor of this thread adds atomically.
    slot = kSharedSlot;
  }
  slot_holder(const slot_holder&) = delete;
  slot_holder& operator=(const slot_holder&) = delete;
};

}  // namespace

std::uint32_t counter_slot() noexcept {
  thread_local slot_holder mine;
  return mine.slot;
}

}  // namespace xcs::detail
