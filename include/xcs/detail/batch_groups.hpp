// SPDX-License-Identifier: MIT
// Which calls of batch ops a plan sends together: grouped by op and dependency level.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "xcs/detail/analysis.hpp"
#include "xcs/detail/graph.hpp"

namespace xcs::detail {

struct op_runtime;

/// The calls of one batch op at one dependency level, which a run sends to its function as one
/// batch (split by xcs::max_batch, in program order). No member depends on another: a path
/// between two nodes would make their levels differ.
struct batch_group {
  op_runtime* op;
  std::uint32_t level;         ///< the longest chain of nodes ending at each member
  std::uint32_t first_member;  ///< into batch_grouping::members
  std::uint32_t member_count;
};

/// A graph's batches, in the order of their first member.
struct batch_grouping {
  std::vector<batch_group> groups;
  std::vector<node_id> members;

  std::span<const node_id> members_of(const batch_group& g) const noexcept {
    return std::span<const node_id>(members).subspan(g.first_member, g.member_count);
  }
};

/// Groups `g`'s calls of batch ops (`a`: its analysis). Thread-safe (pure).
batch_grouping group_batches(const graph& g, const analysis& a);

/// explain()'s lines for `b`: the batches, level by level ("  level 1: 'embed' x 100, 100").
std::string describe_batches(const batch_grouping& b);

}  // namespace xcs::detail
