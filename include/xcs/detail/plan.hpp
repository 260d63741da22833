// SPDX-License-Identifier: MIT
// The compiled plan: a graph laid out for execution by dependency counting.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <utility>
#include <vector>

#include "xcs/detail/analysis.hpp"
#include "xcs/detail/graph.hpp"

namespace xcs::detail {

class frame;
struct op_counters;

/// A graph compiled for execution: immutable once built (but for its pool of frames), and
/// shared by every call with the same signature, from any thread.
///
/// A run starts every node whose inputs are ready, runs each node on the calling thread or a
/// worker as soon as its last input is produced (dependency counting, no barrier per group),
/// and returns when every started node has finished. If ops throw, the run rethrows the
/// exception of the throwing node that comes first in program order, starts no later node
/// that had not started, and still waits for the nodes already running.
class plan {
 public:
  /// Compiles `g`. Throws std::bad_alloc when memory runs out (the caller falls back).
  plan(std::shared_ptr<const graph> g, const analysis& a);
  ~plan();
  plan(const plan&) = delete;
  plan& operator=(const plan&) = delete;

  /// A finished run; gives access to values until destroyed, then recycles its frame.
  class result {
   public:
    result(const plan& p, frame* f) noexcept : plan_(&p), frame_(f) {}
    result(result&& o) noexcept : plan_(o.plan_), frame_(std::exchange(o.frame_, nullptr)) {}
    result& operator=(result&&) = delete;
    ~result();
    /// Address of value `v` in this run (a node's result storage, an argument, a constant).
    void* value(value_id v) const noexcept;
    /// Hands the frame over: give it back with plan::recycle.
    frame* release() noexcept { return std::exchange(frame_, nullptr); }

   private:
    const plan* plan_;
    frame* frame_;
  };

  /// Op and wall time of a run, known also when the run throws.
  struct run_times {
    std::uint64_t op_ns = 0;
    std::uint64_t wall_ns = 0;
  };
  /// Runs the plan for one call. `args[i]` points at argument i. Fills `times` whether the
  /// run returns or throws; adds each node's run to `counters[node]` where that is not null
  /// (an empty span: no counting). Rethrows an op's exception (the one first in program
  /// order) unchanged.
  result run(std::span<const void* const> args, run_times& times,
             std::span<op_counters* const> counters = {}) const;

  /// Address of value `v` in a released frame, and giving the frame back to `p`.
  static void* value_of(void* f, value_id v) noexcept;
  static void recycle(void* f, const void* p) noexcept;

  std::size_t node_count() const noexcept { return nodes_.size(); }
  /// Bytes the plan holds per node (its own tables, not the graph).
  std::size_t bytes_per_node() const noexcept;
  /// Bytes of one frame (per-call state) of this plan.
  std::size_t frame_bytes() const noexcept { return frame_bytes_; }

 private:
  // The constructor's three steps.
  void link_nodes(const analysis& a);  // kernels, join counts, successor lists, roots
  void lay_out_results();              // each result's offset in a frame's storage
  void locate_values();                // where each value is found at run time
  friend class frame;
  friend class result;

  struct node_info {
    const detail::kernel* kernel;
    const void* fn;
    op_profile* op;             // null for operators and packs
    std::uint32_t first_input;  // into in_values_ (and a frame's input pointer table)
    std::uint32_t input_count;
    std::uint32_t first_successor;  // into successors_
    std::uint32_t successor_count;
    std::uint32_t join;     // distinct producer nodes among the inputs
    std::uint32_t storage;  // offset of the result in a frame's storage, or no_id
  };
  // Where a value lives in a run.
  struct value_loc {
    value_kind kind;
    /// argument: its position; element: its parent value; constant: its slot; result: the
    /// offset of its storage in a frame.
    std::uint32_t where;
    std::uint32_t element_index;  // element: its index in the parent
  };

  frame* acquire_frame() const;
  void release_frame(frame* f) const noexcept;

  std::shared_ptr<const graph> graph_;
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
  bool has_async_ = false;  // some node is an async op's

  /// One frame kept without a lock: the common case of one call at a time.
  mutable std::atomic<frame*> cached_frame_{nullptr};
  mutable std::mutex frames_mutex_;  // guards free_frames_
  mutable std::vector<frame*> free_frames_;
};

}  // namespace xcs::detail
