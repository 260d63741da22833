// SPDX-License-Identifier: MIT
// Plan compilation, and running a plan on a frame (see frame.hpp).
#include "xcs/detail/plan.hpp"

#include <algorithm>
#include <vector>

#include "clock.hpp"
#include "frame.hpp"

namespace xcs::detail {

plan::plan(std::shared_ptr<const graph> g, const analysis& a) : graph_(std::move(g)) {
  in_values_.assign(graph_->input_ids().begin(), graph_->input_ids().end());
  link_nodes(a);
  lay_out_results();
  locate_values();
  frame_bytes_ = frame::bytes(*this);
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
    ni.op = nd.op.get();
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

plan::~plan() {
  delete cached_frame_.load(std::memory_order_acquire);
  for (frame* f : free_frames_) delete f;
}

std::size_t plan::bytes_per_node() const noexcept {
  if (nodes_.empty()) return 0;
  std::size_t bytes = nodes_.size() * sizeof(node_info) + in_values_.size() * sizeof(value_id) +
                      successors_.size() * sizeof(node_id) + roots_.size() * sizeof(node_id) +
                      values_.size() * sizeof(value_loc) +
                      (call_values_.size() + call_inputs_.size()) * sizeof(std::uint32_t);
  return bytes / nodes_.size();
}

frame* plan::acquire_frame() const {
  if (frame* f = cached_frame_.exchange(nullptr, std::memory_order_acquire)) return f;
  {
    std::lock_guard lock(frames_mutex_);
    if (!free_frames_.empty()) {
      frame* f = free_frames_.back();
      free_frames_.pop_back();
      return f;
    }
  }
  return new frame(*this);
}

void plan::release_frame(frame* f) const noexcept {
  f->destroy_results();
  frame* empty = nullptr;
  if (cached_frame_.compare_exchange_strong(empty, f, std::memory_order_release)) return;
  try {
    std::lock_guard lock(frames_mutex_);
    // Keep a few frames per plan: enough for the threads that call it at once.
    if (free_frames_.size() < 16) {
      free_frames_.push_back(f);
      return;
    }
  } catch (...) {
  }
  delete f;
}

plan::result::~result() {
  if (frame_) plan_->release_frame(frame_);
}

void* plan::result::value(value_id v) const noexcept { return frame_->value(v); }

void* plan::value_of(void* f, value_id v) noexcept { return static_cast<frame*>(f)->value(v); }

void plan::recycle(void* f, const void* p) noexcept {
  static_cast<const plan*>(p)->release_frame(static_cast<frame*>(f));
}

plan::result plan::run(std::span<const void* const> args, run_times& times,
                       std::span<op_counters* const> counters) const {
  frame* f = acquire_frame();
  result r(*this, f);
  std::int64_t t0 = now_ns();
  auto stop_clock = [&] { times = {f->op_ns(), static_cast<std::uint64_t>(now_ns() - t0)}; };
  f->start(args, counters);
  try {
    f->run_to_end();
  } catch (...) {
    stop_clock();
    throw;  // `r` recycles the frame
  }
  stop_clock();
  return r;
}

}  // namespace xcs::detail
