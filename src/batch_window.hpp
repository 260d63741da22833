// SPDX-License-Identifier: MIT
// xcs::batch_window: a batch op's batches that come within a window of each other go as one.
#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <vector>

#include "xcs/detail/batch.hpp"

namespace xcs::detail {

/// The calls a batch op has been handed but not yet sent, from any run, thread or direct call.
/// The first call opens the window and arms a timer (timer.hpp) for its end; the calls handed
/// over meanwhile join them; at the end, or as soon as `max_batch` calls wait, they go to the
/// op's function as one batch. No thread waits: the calls' nodes hold none, and a direct call
/// waits as for an async op. Thread-safe.
class batch_window {
 public:
  batch_window(batch_sender& sender, std::uint64_t window_ns) noexcept
      : sender_(sender), window_ns_(window_ns) {}
  ~batch_window();
  batch_window(const batch_window&) = delete;
  batch_window& operator=(const batch_window&) = delete;

  /// Adds `items` to the waiting batch; sends what fills `max_batch` at once. `*counts` (if not
  /// null) is set (to the whole batch's if these calls open it, else zeros) before any of the
  /// items gets its outcome.
  void add(std::span<const batch_item> items, batch_counts* counts) noexcept;

 private:
  /// The calls taken out of the window, sent together, and the counter of the first hand-over.
  struct taken {
    std::vector<batch_item> items;
    batch_counts* counts = nullptr;
  };
  static void due(void* self, std::uint64_t generation) noexcept;
  /// Sends `t` from here (an async function) or from the blocking lane (a sync one, when the
  /// thread must not be held: the timer thread).
  void send(taken t, bool from_timer) noexcept;

  batch_sender& sender_;
  const std::uint64_t window_ns_;
  std::mutex mutex_;  // guards everything below
  std::vector<batch_item> waiting_;
  batch_counts* first_counter_ = nullptr;  // the first hand-over's counts
  std::uint64_t generation_ = 0;           // bumped whenever the waiting calls are taken
  std::uint64_t timer_ = 0;                // the armed timer's id, or 0
};

}  // namespace xcs::detail
