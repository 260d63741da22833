// SPDX-License-Identifier: MIT
// One batch of a batch op on its way: its distinct inputs, which call gets which result, and
// the hand-over of the outcome to every call's slot.
#pragma once

#include <bit>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <exception>
#include <functional>
#include <memory>
#include <new>
#include <span>
#include <vector>

#include "xcs/detail/async.hpp"
#include "xcs/detail/batch.hpp"

namespace xcs::detail {

/// Inputs that a batch sends once for several calls: equality-comparable and hashable.
template <class In>
concept deduplicable = requires(const In& a, const In& b) {
  { a == b } -> std::convertible_to<bool>;
  { std::hash<In>{}(a) } -> std::convertible_to<std::size_t>;
};

/// The xcs::error for a batch function whose result has `got` entries for `sent` inputs.
std::exception_ptr batch_size_error(const op_runtime& op, std::size_t got,
                                    std::size_t sent) noexcept;
/// The xcs::error of a batch op's node started as a plain async op (never: an engine bug).
std::exception_ptr batch_not_gathered(const op_runtime& op) noexcept;

/// A batch's calls: the distinct inputs sent, and for each call its slot and its input's
/// position among them. Made on the sending thread; the outcome is handed over once, after
/// which no slot is touched again (each slot's arrival may end its run).
template <class In, class Out>
class batch_calls {
 public:
  /// Gathers `items`' inputs, each distinct one once if In is deduplicable. Throws
  /// std::bad_alloc, or what copying or hashing an input throws.
  explicit batch_calls(std::span<const batch_item> items) {
    slots_.reserve(items.size());
    position_.reserve(items.size());
    inputs_.reserve(items.size());
    if constexpr (deduplicable<In>) {
      // Open addressing over a flat table of item indices: one allocation per batch, where a
      // node-based map would allocate (and free) once per distinct input.
      const std::size_t mask = std::bit_ceil(2 * items.size()) - 1;
      const int shift = 64 - std::countr_zero(mask + 1);
      std::vector<std::uint32_t> first(mask + 1, kFree);  // the item that brought each input
      for (std::uint32_t i = 0; i < items.size(); ++i) {
        const In& in = *static_cast<const In*>(items[i].input);
        std::size_t at = spread(std::hash<In>{}(in), shift) & mask;
        while (first[at] != kFree && !(in == *static_cast<const In*>(items[first[at]].input))) {
          at = (at + 1) & mask;
        }
        if (first[at] == kFree) {
          first[at] = i;
          position_.push_back(static_cast<std::uint32_t>(inputs_.size()));
          inputs_.push_back(in);
        } else {
          position_.push_back(position_[first[at]]);
        }
        slots_.push_back(items[i].slot);
      }
    } else {
      for (const batch_item& it : items) {
        inputs_.push_back(*static_cast<const In*>(it.input));
        slots_.push_back(it.slot);
        position_.push_back(static_cast<std::uint32_t>(position_.size()));
      }
    }
  }

  const std::vector<In>& inputs() const noexcept { return inputs_; }
  /// Inputs sent once for several calls.
  std::uint32_t deduplicated() const noexcept {
    return static_cast<std::uint32_t>(slots_.size() - inputs_.size());
  }

  /// Every call gets its input's result: a copy, or the result itself for its last caller.
  /// A result of the wrong size fails every call with `size_error`.
  void deliver(std::vector<Out>& results, const op_runtime& op) noexcept {
    if (results.size() != inputs_.size()) {
      fail(batch_size_error(op, results.size(), inputs_.size()));
      return;
    }
    std::vector<std::uint32_t> last(inputs_.size(), 0);
    for (std::uint32_t i = 0; i < position_.size(); ++i) last[position_[i]] = i;
    for (std::uint32_t i = 0; i < slots_.size(); ++i) {
      async_slot& s = *slots_[i];
      Out& r = results[position_[i]];
      try {
        if (last[position_[i]] == i) {
          ::new (s.out) Out(std::move(r));
        } else {
          ::new (s.out) Out(r);
        }
        s.has_value = true;
      } catch (...) {
        s.done_error = std::current_exception();  // Out's copy threw: that call's outcome
      }
      completion_arrives(s);
    }
  }

  /// Every call fails with `e`, the same object.
  void fail(const std::exception_ptr& e) noexcept { fail_slots(slots_, e); }

  /// Fails `items`' calls with `e` (when no batch could be made of them).
  static void fail_items(std::span<const batch_item> items, const std::exception_ptr& e) noexcept {
    for (const batch_item& it : items) {
      it.slot->done_error = e;
      completion_arrives(*it.slot);
    }
  }

 private:
  static constexpr std::uint32_t kFree = ~std::uint32_t{0};
  /// A table index from a hash: std::hash of an integer is often the integer itself, whose
  /// low bits alone would crowd some slots; a Fibonacci multiply spreads them into the top
  /// bits (`shift` keeps as many as the table has slots, at least one).
  static std::size_t spread(std::size_t h, int shift) noexcept {
    return static_cast<std::size_t>((std::uint64_t{h} * 0x9E3779B97F4A7C15ull) >> (shift & 63));
  }
  static void fail_slots(const std::vector<async_slot*>& slots, const std::exception_ptr& e) {
    for (async_slot* s : slots) {
      s->done_error = e;
      completion_arrives(*s);
    }
  }

  std::vector<In> inputs_;
  std::vector<async_slot*> slots_;
  std::vector<std::uint32_t> position_;
};

}  // namespace xcs::detail
