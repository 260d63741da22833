// SPDX-License-Identifier: MIT
// The run engine's batches: a batch op's calls join their batch as they start, and the call
// that completes it sends it (see docs/design.md, "Batches").
#include <optional>
#include <utility>
#include <vector>

#include "blocking_lane.hpp"
#include "clock.hpp"
#include "run.hpp"
#include "xcs/detail/batch.hpp"
#include "xcs/detail/trace_context.hpp"

namespace xcs::detail {

node_id run::join_batch(node_id n) noexcept {
  node_state& s = nodes_[n];
  async_slot& a = *s.async;
  op_runtime* op = info(n).op;
  const std::uint64_t t0 = ticks();
  a.prepare(*this, op, s.out, n, t0);
  a.attempt = nullptr;
  // The start's part: the batch's delivery, which comes only after this call's arrival at the
  // batch, is the second, which settles. The call counts as a helper from the send on
  // (send_batch, once for the batch): until then nothing of it runs on another thread.
  a.start_arrived_first();
  batch& b = *s.in_batch;
  const bool last = b.waits.fetch_sub(1, std::memory_order_acq_rel) == 1;
  // What a call costs the thread that starts it (as an async op's start): it estimates the
  // queued calls' work, so that joining a batch is not taken for work worth a wake. Learned
  // from the call that completes its batch (the calls of a batch cost the same), and from
  // any call while the op has no estimate (a staged run's batch may be completed by its
  // closing instead).
  if (last || op->est_ns.load(std::memory_order_relaxed) == 0) {
    op->learn_start(ticks_to_ns(ticks() - t0));
  }
  if (last) send_batch(b);
  return no_id;
}

void run::leave_batch(node_id n) noexcept { arrive_at_batch(*nodes_[n].in_batch); }

void run::arrive_at_batch(batch& b) noexcept {
  if (b.waits.fetch_sub(1, std::memory_order_acq_rel) == 1) send_batch(b);
}

std::span<const node_id> run::batch_members(const batch& b) const noexcept {
  if (!plan_) return b.members;
  return plan_->batches().members_of(plan_->batches().groups[b.group]);
}

void run::send_batch(batch& b) noexcept {
  // Every member has arrived (acquire, through `waits`): its outcome says whether it started.
  std::vector<batch_item> items;
  node_id lead = no_id;
  try {
    const auto members = batch_members(b);
    items.reserve(members.size());
    for (node_id m : members) {
      if (nodes_[m].outcome.load(std::memory_order_acquire) == skipped) continue;
      if (lead == no_id) lead = m;
      items.push_back({inputs_[info(m).first_input], nodes_[m].async});
    }
  } catch (...) {
    // No memory for the list: the started calls fail with std::bad_alloc.
    fail_batch(b, std::current_exception());
    return;
  }
  if (items.empty()) return;
  // Each call's outcome may come from any thread: it counts as a helper until it has settled.
  helpers_inside.fetch_add(static_cast<std::uint32_t>(items.size()), std::memory_order_relaxed);
  nodes_[lead].sent_batch = true;  // read by account(), after every member settled
  batch_sender& sender = *b.op->batch;
  const call_limits* limits = bounded_ ? &inherited_ : nullptr;
  auto send = [&sender, limits,
               counts = &nodes_[lead].sent_counts](std::span<const batch_item> list) noexcept {
    // A jitted call the batch function makes inherits the call's limits; the owner may be at
    // a read of a body being traced, but the batch function's own calls are plain calls.
    std::optional<limits_scope> inherit;
    if (limits) inherit.emplace(limits);
    untraced_scope outside;
    sender.send(list, counts);  // the last touch of the run: the outcomes may end it
  };
  // A sync batch function holds the thread that sends: not the owner of a bounded call (it
  // must be free to return at its deadline) nor a CPU worker for a blocking op (hinted, or
  // seen waiting by the monitor, which watches the function as it does a plain op).
  if (sender.sends_on_thread && (bounded_ || b.op->blocking())) {
    try {
      run_blocking([send, list = std::move(items)] { send(list); });
      return;
    } catch (...) {
      // No thread or memory for the lane: send from here.
    }
  }
  send(items);
}

void run::fail_batch(batch& b, const std::exception_ptr& e) noexcept {
  std::uint32_t started = 0;
  for (node_id m : batch_members(b)) {
    started += nodes_[m].outcome.load(std::memory_order_acquire) != skipped;
  }
  helpers_inside.fetch_add(started, std::memory_order_relaxed);  // as send_batch's
  for (node_id m : batch_members(b)) {
    if (nodes_[m].outcome.load(std::memory_order_relaxed) == skipped) continue;
    nodes_[m].async->done_error = e;
    completion_arrives(*nodes_[m].async);
  }
}

void run::reset_batches() noexcept {
  for (batch& b : batches_) {
    b.waits.store(plan_->batches().groups[b.group].member_count, std::memory_order_relaxed);
  }
}

void run::add_to_batch(node_id n) {
  node_state& s = nodes_[n];
  op_runtime* op = own_info_[n].op;
  batch* b = nullptr;
  for (batch* o : open_batches_) {
    if (o->op == op && o->depth == s.depth) b = o;
  }
  if (!b) {
    open_batches_.reserve(open_batches_.size() + 1);
    b = &batches_.emplace_back();
    b->op = op;
    b->depth = s.depth;
    b->waits.store(1, std::memory_order_relaxed);  // held while open
    b->open = true;
    open_batches_.push_back(b);
  }
  b->members.push_back(n);
  // Relaxed: the node cannot arrive before append drops its join count (acquire-release).
  b->waits.fetch_add(1, std::memory_order_relaxed);
  s.in_batch = b;
  const std::size_t cap = op->batch->max_batch;
  if (cap && b->members.size() == cap) {
    std::erase(open_batches_, b);
    b->open = false;
    arrive_at_batch(*b);
  }
}

void run::close_batches() noexcept {
  // Taken first: a batch sent from here may settle calls, but never appends.
  std::vector<batch*> closing;
  closing.swap(open_batches_);
  for (batch* b : closing) {
    b->open = false;
    arrive_at_batch(*b);
  }
  closing.clear();
  open_batches_.swap(closing);  // keeps the capacity
}

}  // namespace xcs::detail
