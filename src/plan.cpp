// SPDX-License-Identifier: MIT
// Plan compilation: a graph laid out as a frozen node table (see run.hpp for running it).
#include "xcs/detail/plan.hpp"

#include <algorithm>
#include <vector>

#include "xcs/detail/op_runtime.hpp"

namespace xcs::detail {

plan::plan(std::shared_ptr<const graph> g, const analysis& a) : graph_(std::move(g)) {
  in_values_.assign(graph_->input_ids().begin(), graph_->input_ids().end());
  link_nodes(a);
  lay_out_results();
  locate_values();
  batches_ = group_batches(*graph_, a);
}

void plan::link_nodes(const analysis& a) {
  const auto nodes = graph_->nodes();
  const std::size_t n = nodes.size();
  nodes_.resize(n);
  // Successor lists are slices of one array: count first, then fill.
  std::vector<std::uint32_t> succ_count(n, 0);
  for (std::size_t i = 0; i < n; ++i) {
    for (node_id p : a.predecessors[i]) ++succ_count[p];
  }
  std::uint32_t offset = 0;
  for (std::size_t i = 0; i < n; ++i) {
    nodes_[i].first_successor = offset;
    nodes_[i].successor_count = 0;
    offset += succ_count[i];
  }
  successors_.resize(offset);
  for (std::size_t i = 0; i < n; ++i) {
    const node& nd = nodes[i];
    auto& ni = nodes_[i];
    ni.kernel = nd.kernel;
    ni.fn = nd.fn;
    ni.op = nd.op ? &op_runtime::of(*nd.op) : nullptr;
    ni.first_input = nd.first_input;
    ni.input_count = nd.input_count;
    ni.join = static_cast<std::uint32_t>(a.predecessors[i].size());
    if (nd.kernel->start) has_async_ = true;
    for (node_id p : a.predecessors[i]) {
      auto& pi = nodes_[p];
      successors_[pi.first_successor + pi.successor_count++] = static_cast<node_id>(i);
    }
    if (ni.join == 0) roots_.push_back(static_cast<node_id>(i));
  }
}

void plan::lay_out_results() {
  const auto nodes = graph_->nodes();
  std::size_t storage = 0;
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const kernel& k = *nodes[i].kernel;
    storage_align_ = std::max(storage_align_, k.align);
    if (k.size > 0) {
      storage = (storage + k.align - 1) / k.align * k.align;
      nodes_[i].storage = static_cast<std::uint32_t>(storage);
      storage += k.size;
    } else {
      nodes_[i].storage = no_id;
    }
  }
  storage_bytes_ = storage;
}

void plan::locate_values() {
  const auto values = graph_->values();
  values_.resize(values.size());
  for (std::size_t v = 0; v < values.size(); ++v) {
    const value& val = values[v];
    auto& loc = values_[v];
    loc.kind = val.kind;
    switch (val.kind) {
      case value_kind::argument:
        loc.where = val.position();
        call_values_.push_back(static_cast<value_id>(v));
        break;
      case value_kind::element:
        loc.where = val.parent;
        loc.element_index = val.element_index();
        call_values_.push_back(static_cast<value_id>(v));
        break;
      case value_kind::constant:
        loc.where = val.constant_slot();
        break;
      case value_kind::result:
        loc.where = nodes_[val.producer()].storage;
        break;
    }
  }
  for (std::uint32_t slot = 0; slot < in_values_.size(); ++slot) {
    value_kind k = values_[in_values_[slot]].kind;
    if (k == value_kind::argument || k == value_kind::element) call_inputs_.push_back(slot);
  }
}

std::size_t plan::bytes_per_node() const noexcept {
  if (nodes_.empty()) return 0;
  std::size_t bytes = nodes_.size() * sizeof(node_layout) + in_values_.size() * sizeof(value_id) +
                      successors_.size() * sizeof(node_id) + roots_.size() * sizeof(node_id) +
                      values_.size() * sizeof(value_loc) +
                      (call_values_.size() + call_inputs_.size()) * sizeof(std::uint32_t);
  return bytes / nodes_.size();
}

}  // namespace xcs::detail
