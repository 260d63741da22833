// SPDX-License-Identifier: MIT
// The compiled plan: a graph laid out as a frozen node table for the run engine.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <vector>

#include "xcs/detail/analysis.hpp"
#include "xcs/detail/batch_groups.hpp"
#include "xcs/detail/graph.hpp"

namespace xcs::detail {

struct op_runtime;

/// How the run engine finds one node: what it runs and where its inputs, successors and
/// result are. A plan's table is frozen; a staged run appends its own (successors unused).
struct node_layout {
  const detail::kernel* kernel = nullptr;
  const void* fn = nullptr;
  op_runtime* op = nullptr;       ///< the op's runtime state; null for operators and packs
  std::uint32_t first_input = 0;  ///< into the run's input address table
  std::uint32_t input_count = 0;
  std::uint32_t first_successor = 0;  ///< into plan::successors()
  std::uint32_t successor_count = 0;
  std::uint32_t join = 0;         ///< distinct producer nodes among the inputs
  std::uint32_t storage = no_id;  ///< offset of the result in a run's storage, or no_id
};

/// A graph compiled for execution: immutable, shared by every call with the same signature,
/// from any thread. It holds no per-call state: a call runs it on a `run` (src/run.hpp),
/// which starts every node as soon as its inputs are ready (dependency counting, no barrier
/// per group).
class plan {
 public:
  /// Compiles `g`. Throws std::bad_alloc when memory runs out (the caller falls back).
  plan(std::shared_ptr<const graph> g, const analysis& a);

  /// Where a value lives in a run.
  struct value_loc {
    value_kind kind;
    /// argument: its position; element: its parent value; constant: its slot; result: the
    /// offset of its storage in a run.
    std::uint32_t where;
    std::uint32_t element_index;  ///< element: its index in the parent
  };

  const graph& ir() const noexcept { return *graph_; }
  std::span<const node_layout> nodes() const noexcept { return nodes_; }
  std::span<const node_id> successors() const noexcept { return successors_; }
  std::span<const node_id> roots() const noexcept { return roots_; }
  /// The value read by each input slot.
  std::span<const value_id> input_values() const noexcept { return in_values_; }
  std::span<const value_loc> values() const noexcept { return values_; }
  /// Values that depend on the call's arguments (arguments and elements), parents first.
  std::span<const value_id> call_values() const noexcept { return call_values_; }
  /// Input slots that read a call value, patched at the start of each run.
  std::span<const std::uint32_t> call_inputs() const noexcept { return call_inputs_; }
  std::size_t storage_bytes() const noexcept { return storage_bytes_; }
  std::size_t storage_align() const noexcept { return storage_align_; }
  bool has_async() const noexcept { return has_async_; }
  /// The batches a run sends, in the order of their first member.
  const batch_grouping& batches() const noexcept { return batches_; }

  std::size_t node_count() const noexcept { return nodes_.size(); }
  /// Bytes the plan holds per node (its own tables, not the graph).
  std::size_t bytes_per_node() const noexcept;

 private:
  // The constructor's three steps.
  void link_nodes(const analysis& a);  // kernels, join counts, successor lists, roots
  void lay_out_results();              // each result's offset in a run's storage
  void locate_values();                // where each value is found at run time

  std::shared_ptr<const graph> graph_;
  std::vector<node_layout> nodes_;
  std::vector<value_id> in_values_;
  std::vector<node_id> successors_;
  std::vector<node_id> roots_;
  std::vector<value_loc> values_;
  std::vector<value_id> call_values_;
  std::vector<std::uint32_t> call_inputs_;
  std::size_t storage_bytes_ = 0;
  std::size_t storage_align_ = alignof(std::max_align_t);
  bool has_async_ = false;
  batch_grouping batches_;  // batch ops' calls, by op and dependency level
};

/// Bytes one run of `p` (its per-call state, src/run.hpp) allocates.
std::size_t run_bytes(const plan& p) noexcept;

}  // namespace xcs::detail
