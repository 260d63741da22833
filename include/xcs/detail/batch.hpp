// SPDX-License-Identifier: MIT
// What the run engine knows of a batch op (xcs::batch_op): how to send a batch of its calls.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>

namespace xcs::detail {

struct async_slot;

/// One call of a batch op in a batch: its input (an `In`) and the slot its result goes to.
struct batch_item {
  const void* input;
  async_slot* slot;
};

class batch_window;

/// What one batch adds to its op's counters, written by the sender before any of its calls
/// gets its outcome: inputs sent once for several calls, the batch's re-sends (retries: one
/// per further call of the batch function) and its attempts that timed out.
struct batch_counts {
  std::uint32_t deduplicated = 0;
  std::uint16_t resends = 0;
  std::uint16_t timeouts = 0;
};

/// A batch op's sending side, implemented by its state (batch_op.hpp). The engine gathers the
/// calls of a batch and hands them over in one `send`.
class batch_sender {
 public:
  /// `window_ns`: xcs::batch_window's, or 0.
  batch_sender(std::size_t cap, bool holds_thread, std::uint64_t window_ns);

  /// Sends `items` (at least one) to the batch function as one batch, or, with a batch
  /// window, adds them to the batch that waits. Every item's slot gets its outcome written and
  /// its completion's arrival made exactly once, now or later, from any thread (so the caller
  /// must not touch a slot, nor its run, after handing it over). `items` is read during the
  /// call only. Sets `*counts` (if not null) before any item gets its outcome; it must stay
  /// valid until then.
  void send(std::span<const batch_item> items, batch_counts* counts) noexcept;
  /// The same, now: the batch goes to the batch function (after its per-batch waits).
  virtual void send_now(std::span<const batch_item> items, batch_counts* counts) noexcept = 0;
  /// Made with xcs::batch_window: calls may wait for others.
  bool windowed() const noexcept { return window_ != nullptr; }

  /// xcs::max_batch's cap on the items of one batch, or 0 for none.
  const std::size_t max_batch;
  /// The batch function runs on the thread that sends (it is not async): an engine that must
  /// not hold that thread (a bounded call's owner, a blocking op) sends from the blocking lane.
  const bool sends_on_thread;

 protected:
  ~batch_sender();

 private:
  std::unique_ptr<batch_window> window_;
};

}  // namespace xcs::detail
