// SPDX-License-Identifier: MIT
// The compiled plan: a graph laid out for execution by dependency counting.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

#include "xcs/analysis.hpp"
#include "xcs/detail/op_table.hpp"
#include "xcs/detail/result.hpp"
#include "xcs/graph.hpp"

namespace xcs {

namespace detail {
class frame;
}

/// A graph compiled for execution. Immutable once built (but for its learned op durations and
/// its pool of frames), and shared by every call with the same signature, from any thread.
///
/// A run starts every node whose inputs are ready, runs each node on the calling thread or a
/// worker as soon as its last input is produced (dependency counting, no barrier per group),
/// and returns when every started node has finished. If ops throw, the run rethrows the
/// exception of the throwing node that comes first in program order, starts no later node
/// that had not started, and still waits for the nodes already running.
class plan {
 public:
  /// Compiles `g`. Op run counters go to `ops` (a table of the plan's own if null). Throws
  /// std::bad_alloc when memory runs out (the caller falls back).
  plan(std::shared_ptr<const graph> g, const analysis& a, detail::result_recipe recipe,
       std::shared_ptr<detail::op_table> ops = nullptr);
  ~plan();
  plan(const plan&) = delete;
  plan& operator=(const plan&) = delete;

  /// A finished run; gives access to values until destroyed, then recycles its frame.
  class result {
   public:
    result(const plan& p, detail::frame* f) noexcept : plan_(&p), frame_(f) {}
    result(result&& o) noexcept : plan_(o.plan_), frame_(std::exchange(o.frame_, nullptr)) {}
    result& operator=(result&&) = delete;
    ~result();
    /// Address of value `v` in this run (a node's result storage, an argument, a constant).
    void* value(value_id v) const noexcept;

   private:
    const plan* plan_;
    detail::frame* frame_;
  };

  /// Runs the plan for one call. `args[i]` points at argument i. Rethrows an op's exception
  /// (the one first in program order) unchanged.
  result run(std::span<const void* const> args) const;

  /// Op and wall time of a run, known also when the run throws.
  struct run_times {
    std::uint64_t op_ns = 0;
    std::uint64_t wall_ns = 0;
  };
  /// As run(args), and fills `times` whether the run returns or throws.
  result run(std::span<const void* const> args, run_times& times) const;

  /// Builds the call's return value of type R from a finished run.
  template <class R>
  R build(const result& r) const {
    if constexpr (std::is_void_v<R>) {
      return;
    } else {
      auto value = [&r](value_id v) { return r.value(v); };
      return detail::result_builder<decltype(value)>(recipe_, value).template build<R>();
    }
  }

  const graph& ir() const noexcept { return *graph_; }
  std::size_t node_count() const noexcept { return nodes_.size(); }
  /// Bytes the plan holds per node (its own tables, not the graph).
  std::size_t bytes_per_node() const noexcept;
  /// Bytes of one frame (per-call state) of this plan.
  std::size_t frame_bytes() const noexcept { return frame_bytes_; }

 private:
  friend class detail::frame;
  friend class result;

  struct node_info {
    const detail::kernel* kernel;
    const void* fn;
    detail::op_profile* op;
    detail::op_counters* counters;  // null for operators and packs
    std::uint32_t first_input;      // into in_values_ (and a frame's input pointer table)
    std::uint32_t input_count;
    std::uint32_t first_successor;  // into successors_
    std::uint32_t successor_count;
    std::uint32_t join;     // distinct producer nodes among the inputs
    std::uint32_t storage;  // offset of the result in a frame's storage, or no_id
  };
  // Where a value lives in a run.
  struct value_loc {
    value_kind kind;
    std::uint32_t a;  // argument: position; element: parent value; constant: slot; result: offset
    std::uint32_t b;  // element: index
  };

  detail::frame* acquire_frame() const;
  void release_frame(detail::frame* f) const noexcept;

  std::shared_ptr<const graph> graph_;
  detail::result_recipe recipe_;
  std::shared_ptr<detail::op_table> ops_;
  std::vector<node_info> nodes_;
  std::vector<value_id> in_values_;
  std::vector<node_id> successors_;
  std::vector<node_id> roots_;
  std::vector<value_loc> values_;
  /// Values that depend on the call's arguments (arguments and elements), in creation order,
  /// so that a parent always comes before its elements.
  std::vector<value_id> call_values_;
  /// Input slots (into in_values_) that read a call value, patched at the start of each run.
  std::vector<std::uint32_t> call_inputs_;
  std::size_t storage_bytes_ = 0;
  std::size_t frame_bytes_ = 0;

  /// Learned duration of each node's op in ns (0 = not yet measured). Relaxed: a hint for
  /// whether waking a sleeping worker is worth its cost.
  std::unique_ptr<std::atomic<std::uint32_t>[]> est_ns_;

  /// One frame kept without a lock: the common case of one call at a time.
  mutable std::atomic<detail::frame*> cached_frame_{nullptr};
  mutable std::mutex frames_mutex_;  // guards free_frames_
  mutable std::vector<detail::frame*> free_frames_;
};

}  // namespace xcs
