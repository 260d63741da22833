// SPDX-License-Identifier: MIT
// The run engine's staged side: appending nodes while the body runs, reads, and the drain at the
// end (see run.hpp).
#include <algorithm>
#include <cstring>
#include <new>
#include <utility>

#include "clock.hpp"
#include "run.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {

// ---- staged runs: appending ---------------------------------------------------------------

void run::catch_up_values() {
  const auto values = graph_->values();
  for (std::size_t v = addr_.size(); v < values.size(); ++v) {
    const detail::value& val = values[v];
    void* a = nullptr;
    switch (val.kind) {
      case value_kind::argument:
        a = const_cast<void*>(args_[val.position()]);
        break;
      case value_kind::element:
        // An element of an argument, or of an op's result that a read has already waited for.
        a = const_cast<void*>(val.element(addr_[val.parent], val.element_index()));
        break;
      case value_kind::constant:
        a = const_cast<void*>(graph_->constant(val.constant_slot()));
        break;
      case value_kind::result:
        break;  // set by append()
    }
    addr_.push_back(a);
  }
}

void run::append(node_id n) {
  catch_up_values();
  const node& nd = graph_->nodes()[n];
  const auto ins = graph_->inputs(nd);
  const auto in_count = static_cast<std::uint32_t>(ins.size());
  own_info_.grow_to(n + 1);
  nodes_.grow_to(n + 1);
  const op_runtime* op = nd.op ? &op_runtime::of(*nd.op) : nullptr;
  const std::uint32_t cells = cells_ + queue_cells(op);
  queue_.grow_to(cells);
  std::uint32_t first = inputs_.contiguous_from(inputs_used_, in_count);
  inputs_.grow_to(first + in_count);
  for (std::uint32_t i = 0; i < in_count; ++i) inputs_[first + i] = addr_[ins[i]];
  inputs_used_ = first + in_count;
  own_info_[n] = node_layout{nd.kernel, nd.fn, const_cast<op_runtime*>(op), first, in_count};
  node_state& s = nodes_[n];
  s.join.store(1, std::memory_order_relaxed);  // held until every producer is linked
  s.outcome.store(pending, std::memory_order_relaxed);
  s.bad_input.store(false, std::memory_order_relaxed);
  s.holds_permit = false;
  s.holds_tokens = false;
  s.token_error = false;
  s.attempts = 0;
  s.timeouts = 0;
  s.rate_wait = 0;
  s.counted_in_flight = false;
  s.mark = 0;
  s.linked_to = no_id;
  s.depth = 1;
  s.ticks = 0;
  s.cpu_ns = 0;
  s.successors.store(nullptr, std::memory_order_relaxed);
  if (s.cache) s.cache->clear();
  s.in_batch = nullptr;
  s.sent_batch = false;
  s.sent_counts = {};
  s.out = nd.kernel->size ? allocate_storage(nd.kernel->size, nd.kernel->align) : nullptr;
  s.async = nd.kernel->start ? &async_slots_.emplace_back() : nullptr;
  if (nd.result != no_id) addr_[nd.result] = s.out;
  count_ = n + 1;
  remaining_.fetch_add(1, std::memory_order_seq_cst);
  // Release: a thread that pops one of the new cells sees the segments made for them.
  cells_ = cells;
  queue_capacity_.store(cells, std::memory_order_release);
  published_.store(n + 1, std::memory_order_release);
  for (value_id v : ins) {
    node_id p = graph_->producer(graph_->root(v));
    if (p != no_id) link(n, p);
  }
  deepest_ = std::max(deepest_, s.depth);
  if (op && op->batch) add_to_batch(n);  // before it can start: its batch counts it
  if (s.join.fetch_sub(1, std::memory_order_acq_rel) == 1) {
    push(n);
    share(estimate(n), wake::if_worth);
  }
}

void run::link(node_id n, node_id producer) {
  node_state& s = nodes_[n];
  node_state& p = nodes_[producer];
  if (p.linked_to == n) return;  // another input from the same producer
  p.linked_to = n;
  s.depth = std::max(s.depth, p.depth + 1);
  edges_.grow_to(edges_used_ + 1);
  edge& e = edges_[edges_used_];
  e.to = n;
  // The join count goes up first: the producer may finish the moment the edge is in.
  s.join.fetch_add(1, std::memory_order_relaxed);
  edge* head = p.successors.load(std::memory_order_acquire);
  do {
    if (head == closed()) {
      s.join.fetch_sub(1, std::memory_order_relaxed);
      if (!succeeded(p.outcome.load(std::memory_order_acquire))) {
        s.bad_input.store(true, std::memory_order_relaxed);
      }
      return;
    }
    e.next = head;
  } while (!p.successors.compare_exchange_weak(head, &e, std::memory_order_acq_rel,
                                               std::memory_order_acquire));
  ++edges_used_;
}

// ---- staged runs: reads -------------------------------------------------------------------

bool run::mark_ancestors(node_id target) {
  // Marks what the read needs (its unfinished ancestors, for the owner's chain policy) and
  // finds whether the read serializes the body: nothing else of the call is in flight, and
  // every node recorded since the previous read leads to the value (the body had nothing to
  // overlap with it; the second test keeps a body whose other ops merely finished early from
  // counting).
  ++read_mark_;
  std::uint32_t recent = 0, unfinished = 0;
  mark_stack_.clear();
  mark_stack_.push_back(target);
  while (!mark_stack_.empty()) {
    node_id n = mark_stack_.back();
    mark_stack_.pop_back();
    node_state& s = nodes_[n];
    if (s.mark == read_mark_) continue;
    const bool done = is_final(s.outcome.load(std::memory_order_acquire));
    if (n < read_from_ && done) continue;
    s.mark = read_mark_;
    recent += n >= read_from_;
    unfinished += !done;
    for (value_id v : graph_->inputs(graph_->nodes()[n])) {
      node_id p = graph_->producer(graph_->root(v));
      if (p != no_id) mark_stack_.push_back(p);
    }
  }
  return recent == count_ - read_from_ && unfinished >= remaining_.load(std::memory_order_relaxed);
}

const void* run::wait_value(value_id v, bool& serial) {
  catch_up_values();
  serial = false;
  node_id p = graph_->producer(graph_->root(v));
  if (p == no_id) return addr_[v];
  if (!waited_for(wait_for::node, p)) {
    ++syncs_;
    serial = mark_ancestors(p);
    owner_wait(bounded_ ? chain_policy::no_ops : chain_policy::needed, wait_for::node, p);
  }
  read_from_ = count_;
  if (nodes_[p].outcome.load(std::memory_order_acquire) == constructed) {
    catch_up_values();
    return addr_[v];
  }
  // The value cannot be computed (or is not yet, and the call stopped or failed before it).
  // The direct call would have thrown at the first thrower in program order, which may be a
  // node still running before the one seen: wait for those.
  owner_wait(bounded_ ? chain_policy::no_ops : chain_policy::any, wait_for::first_error_settled,
             no_id);
  if (stopped_.load(std::memory_order_acquire) != not_stopped && !op_error_wins()) {
    std::rethrow_exception(end_error());  // the deadline's or the cancellation's
  }
  deliver();
}

void run::deliver() {
  std::unique_lock lock(error_mutex_);
  if (first_error_.load(std::memory_order_relaxed) == no_id) {
    throw error(
        "xcs: the body reads a value computed from an op's result that an exception the body "
        "caught left uncomputed");
  }
  std::exception_ptr e = std::exchange(error_, nullptr);
  // The body may catch it. The direct call would not have run the ops recorded after the
  // thrower (they sit between the throw and the catch): abandon them and their errors.
  abandon_below_.store(count_, std::memory_order_release);
  first_error_.store(no_id, std::memory_order_release);
  lock.unlock();
  std::rethrow_exception(e);
}

std::exception_ptr run::drain() noexcept {
  owner_wait(bounded_ ? chain_policy::no_ops : chain_policy::any, wait_for::end, no_id);
  return end_call();
}

}  // namespace xcs::detail
