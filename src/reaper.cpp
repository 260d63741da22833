// SPDX-License-Identifier: MIT
// Runs that a call left behind (an early end with ops still running): kept alive, with what
// their nodes may use, until their last node is done, then freed.
#include <chrono>
#include <mutex>
#include <utility>
#include <vector>

#include "blocking_lane.hpp"
#include "run.hpp"
#include "timer.hpp"

namespace xcs::detail {
namespace {

/// How often the reaper looks at the runs left behind.
constexpr auto kReapEvery = std::chrono::milliseconds(10);

struct reaper {
  std::mutex mutex;     // guards the fields below
  run* runs = nullptr;  // a list through run::reap_next_
  bool scheduled = false;
};

// Leaked: a run may be left behind during static destruction.
reaper& the_reaper() {
  static reaper* r = new reaper;
  return *r;
}

void schedule(reaper& r) noexcept;

void sweep(reaper& r) noexcept {
  run* mine;
  {
    std::lock_guard lock(r.mutex);
    mine = std::exchange(r.runs, nullptr);
  }
  run* left = nullptr;
  while (mine) {
    run* x = mine;
    mine = x->reap_next_;
    if (x->reap()) {
      delete x;
    } else {
      x->reap_next_ = left;
      left = x;
    }
  }
  std::lock_guard lock(r.mutex);
  while (left) {
    run* x = left;
    left = x->reap_next_;
    x->reap_next_ = r.runs;
    r.runs = x;
  }
  r.scheduled = false;
  if (r.runs) schedule(r);
}

void schedule(reaper& r) noexcept {
  // With r.mutex held. The sweep runs on the lane: it may wait for a helper's last touch,
  // and it frees results (user destructors), which the timer thread must not run.
  try {
    add_timer(
        std::chrono::steady_clock::now() + kReapEvery,
        +[](void* p, std::uint64_t) noexcept {
          auto& rp = *static_cast<reaper*>(p);
          try {
            run_blocking([&rp] { sweep(rp); });
          } catch (...) {
            std::lock_guard lock(rp.mutex);
            rp.scheduled = false;  // the next run left behind schedules again
          }
        },
        &r, 0);
    r.scheduled = true;
  } catch (...) {
  }
}

}  // namespace

bool run::leave_behind(std::shared_ptr<const void> keep) noexcept {
  if (!unfinished()) {
    // An early end whose last node finished meanwhile: it still has to leave the pool.
    leave_pool();
    return false;
  }
  try {
    if (keep) kept_.push_back(std::move(keep));
    if (!plan_) graph_->keep_alive(kept_);
  } catch (...) {
    // No memory to keep what its nodes use: wait for them here.
    kept_.clear();
    owner_wait(chain_policy::any, wait_for::all_nodes, no_id);
    leave_pool();
    return false;
  }
  reaper& r = the_reaper();
  std::lock_guard lock(r.mutex);
  reap_next_ = r.runs;
  r.runs = this;
  if (!r.scheduled) schedule(r);
  return true;
}

bool run::reap() noexcept {
  // Nothing starts any more: what is queued (successors of nodes that finished late, nodes
  // handed a permit) is skipped here, each in its turn.
  for (node_id n = pop(); n != no_id; n = pop()) run_chain(n, chain_policy::any);
  if (unfinished()) return false;
  leave_pool();
  return true;  // kept_ goes with the run, after its results (their kernels may be the plan's)
}

}  // namespace xcs::detail
