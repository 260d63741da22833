// SPDX-License-Identifier: MIT
// Parallelism analysis of an IR graph: which nodes are independent, and what that is worth.
#pragma once

#include <cstddef>
#include <vector>

#include "xcs/detail/graph.hpp"

namespace xcs::detail {

/// What the analyzer found in a graph. Costs are counted in nodes (one unit each).
struct analysis {
  /// Nodes grouped by depth: a node's group is one more than the deepest of its inputs'.
  /// Nodes in one group are mutually independent. Groups describe the graph; the plan does
  /// not run group by group, it starts each node as soon as its own inputs are ready.
  std::vector<std::vector<node_id>> parallel_groups;
  std::size_t max_parallelism = 0;  ///< size of the widest group
  /// The longest dependency chain, first node first.
  std::vector<node_id> critical_path;
  /// Work over span: nodes / critical path length, the speedup with unlimited workers and
  /// equal op durations. 1 for an empty graph.
  double estimated_speedup = 1.0;
  /// For each node, the nodes whose results it reads (deduplicated, ascending).
  std::vector<std::vector<node_id>> predecessors;
};

/// Analyzes `g` in O(nodes + edges). Thread-safe (pure).
analysis analyze(const graph& g);

}  // namespace xcs::detail
