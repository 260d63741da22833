// SPDX-License-Identifier: MIT
// The per-call state of a run's node: its join count, its outcome, its result, and what its
// policies, its cache and its batch keep between the steps of its lifecycle (run.hpp).
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "xcs/detail/async.hpp"
#include "xcs/detail/batch.hpp"
#include "xcs/detail/graph.hpp"
#include "xcs/detail/op_runtime.hpp"

namespace xcs::detail {

/// Where a node of a cached op is in its turn at the cache (cache_slot::step).
enum class cache_step : std::uint8_t {
  unasked,  // not yet looked up in this call
  waiting,  // another instance computes its key; a callback makes it ready again
  filled,   // handed that instance's result (cache_filled): a hit
  owner,    // computes its key; finish() fills the cache or hands the key on
  done,     // settled: a hit, or its flight ended
};
/// A cached op's node's state in the cache, kept (with the key's capacity) across calls.
struct cache_slot {
  std::string key;
  std::shared_ptr<const void> value;  // handed by the key's owner
  cache_step step = cache_step::unasked;
  bool hit = false;   // its result is a copy of a cached one (for the counters)
  bool miss = false;  // it ran the op for the cache (for the counters)
  void clear() noexcept {
    value.reset();
    step = cache_step::unasked;
    hit = false;
    miss = false;
  }
};
/// A successor link of a staged run's node, appended by the owner.
struct successor_edge {
  node_id to;
  successor_edge* next;
};
struct call_batch;
/// The per-call state of one node.
struct node_state {
  std::atomic<std::uint32_t> join{0};  // producers not yet finished (+1 while appending)
  std::atomic<std::uint8_t> outcome{0};
  std::atomic<bool> bad_input{false};       // a producer threw, was skipped or abandoned
  bool holds_permit = false;                // of its op's concurrency limit
  bool counted_in_flight = false;           // staged runs: counted in run::in_flight_
  std::uint32_t mark = 0;                   // owner only: == run::read_mark_ while a read needs it
  std::uint32_t linked_to = no_id;          // owner only: the last node appended after this one
  std::uint32_t depth = 1;                  // owner only: the longest chain ending here
  std::uint64_t ticks = 0;                  // how long it ran (see clock.hpp)
  std::uint64_t cpu_ns = 0;                 // its thread CPU time, when measured (else 0)
  void* out = nullptr;                      // its result (null for void)
  async_slot* async = nullptr;              // for an async op's node
  std::stop_source stop{std::nostopstate};  // its instance's, if its op takes a token
  // Ops with a policy (timeout, retry, rate limit):
  bool holds_tokens = false;    // of its op's rate limit, for the attempt about to start
  bool token_error = false;     // its rate limit's source failed (the error is recorded)
  std::uint16_t attempts = 0;   // attempts started (retries: attempts - 1)
  std::uint16_t timeouts = 0;   // attempts that timed out
  std::uint64_t rate_wait = 0;  // ticks spent waiting for tokens
  std::uint64_t wait_from = 0;  // ticks when it queued for tokens
  std::atomic<successor_edge*> successors{nullptr};  // staged runs; closed when the node finishes
  std::unique_ptr<cache_slot> cache;                 // made for the first node of a cached op here
  // Batch ops' calls (run_batch.cpp):
  call_batch* in_batch = nullptr;  // its batch in run::batches_ (plan runs: set once)
  bool sent_batch = false;         // it was the first call of a batch sent (for the counters)
  batch_counts sent_counts;        // ... and that batch's (deduplicated, resends, timeouts)
};
/// The calls of one batch op that a run sends together (run_batch.cpp). A plan's come from
/// its batch groups; a staged run's are gathered as the body records, by op and depth.
struct call_batch {
  op_runtime* op = nullptr;
  std::uint32_t group = no_id;  // plan runs: its plan's batch group
  std::uint32_t depth = 0;      // staged runs: the depth of its members
  /// Members yet to arrive (started or skipped), plus one while a staged run may still add
  /// some. Acquire-release: the thread that takes it to zero sends the batch, and sees every
  /// member's outcome and slot.
  std::atomic<std::uint32_t> waits{0};
  std::vector<node_id> members;  // staged runs (a plan's are the plan's)
  bool open = false;             // staged runs, owner only: may still add members
};
}  // namespace xcs::detail
