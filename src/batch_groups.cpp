// SPDX-License-Identifier: MIT
// Batch groups: a plan's calls of batch ops, by op and dependency level, split by max_batch.
#include "xcs/detail/batch_groups.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <string>
#include <utility>

#include "xcs/detail/batch.hpp"
#include "xcs/detail/op_runtime.hpp"

namespace xcs::detail {

batch_grouping group_batches(const graph& g, const analysis& a) {
  batch_grouping out;
  const auto nodes = g.nodes();
  const std::size_t n = nodes.size();
  auto batch_op = [&](std::size_t i) -> op_runtime* {
    if (!nodes[i].op) return nullptr;
    op_runtime& op = op_runtime::of(*nodes[i].op);
    return op.batch ? &op : nullptr;
  };
  bool any = false;
  for (std::size_t i = 0; i < n && !any; ++i) any = batch_op(i) != nullptr;
  if (!any) return out;
  // A node's level: the longest chain of nodes ending at it (ids are program order, so every
  // predecessor's level is known first). Calls at one level cannot depend on each other.
  std::vector<std::uint32_t> level(n, 1);
  for (std::size_t i = 0; i < n; ++i) {
    for (node_id p : a.predecessors[i]) level[i] = std::max(level[i], level[p] + 1);
  }
  std::map<std::pair<op_runtime*, std::uint32_t>, std::uint32_t> open;  // the group filling up
  std::vector<std::vector<node_id>> members;
  for (std::size_t i = 0; i < n; ++i) {
    op_runtime* op = batch_op(i);
    if (!op) continue;
    auto [at, fresh] = open.try_emplace({op, level[i]}, no_id);
    const std::size_t cap = op->batch->max_batch;
    if (fresh || (cap && members[at->second].size() == cap)) {
      at->second = static_cast<std::uint32_t>(out.groups.size());
      out.groups.push_back({op, level[i], 0, 0});
      members.emplace_back();
    }
    members[at->second].push_back(static_cast<node_id>(i));
  }
  for (std::size_t b = 0; b < out.groups.size(); ++b) {
    out.groups[b].first_member = static_cast<std::uint32_t>(out.members.size());
    out.groups[b].member_count = static_cast<std::uint32_t>(members[b].size());
    out.members.insert(out.members.end(), members[b].begin(), members[b].end());
  }
  return out;
}

std::string describe_batches(const batch_grouping& b) {
  // Level by level; within a level, each op's batches in program order, as their sizes.
  std::map<std::uint32_t, std::vector<const batch_group*>> by_level;
  for (const batch_group& grp : b.groups) by_level[grp.level].push_back(&grp);
  std::string s;
  for (auto& [lvl, groups] : by_level) {
    std::stable_sort(groups.begin(), groups.end(), [](const batch_group* x, const batch_group* y) {
      return x->op->name < y->op->name;
    });
    s += fmt::format("  level {}:", lvl);
    const op_runtime* shown = nullptr;
    for (const batch_group* grp : groups) {
      if (grp->op != shown) {
        s += fmt::format("{} '{}' x", shown ? ";" : "", grp->op->name);
        shown = grp->op;
      }
      s += fmt::format(" {}", grp->member_count);
    }
    s += "\n";
  }
  return s;
}

}  // namespace xcs::detail
