// SPDX-License-Identifier: MIT
// The parallelism analyzer: depth groups, critical path, work over span.
#include "xcs/detail/analysis.hpp"

#include <algorithm>

namespace xcs::detail {

analysis analyze(const graph& g) {
  analysis a;
  const auto nodes = g.nodes();
  const std::size_t n = nodes.size();
  a.predecessors.resize(n);
  std::vector<std::uint32_t> depth(n, 0);
  std::vector<node_id> deepest_pred(n, no_id);
  std::uint32_t max_depth = 0;
  node_id deepest = no_id;
  std::vector<node_id> stack;
  for (std::size_t i = 0; i < n; ++i) {
    auto& preds = a.predecessors[i];
    for (value_id v : g.inputs(nodes[i])) {
      // An element of a node's result (made by a staged read of a vector) leads to the node.
      node_id p = g.producer(g.root(v));
      if (p != no_id) preds.push_back(p);
    }
    std::sort(preds.begin(), preds.end());
    preds.erase(std::unique(preds.begin(), preds.end()), preds.end());
    for (node_id p : preds) {
      if (depth[p] + 1 > depth[i]) {
        depth[i] = depth[p] + 1;
        deepest_pred[i] = p;
      }
    }
    if (deepest == no_id || depth[i] > max_depth) {
      max_depth = depth[i];
      deepest = static_cast<node_id>(i);
    }
  }
  if (n == 0) return a;
  a.parallel_groups.resize(max_depth + 1);
  for (std::size_t i = 0; i < n; ++i)
    a.parallel_groups[depth[i]].push_back(static_cast<node_id>(i));
  for (const auto& grp : a.parallel_groups)
    a.max_parallelism = std::max(a.max_parallelism, grp.size());
  for (node_id c = deepest; c != no_id; c = deepest_pred[c]) a.critical_path.push_back(c);
  std::reverse(a.critical_path.begin(), a.critical_path.end());
  a.estimated_speedup = static_cast<double>(n) / static_cast<double>(a.critical_path.size());
  return a;
}

}  // namespace xcs::detail
