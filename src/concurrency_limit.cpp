// SPDX-License-Identifier: MIT
// Per-op concurrency limits.
#include "xcs/detail/concurrency_limit.hpp"

#include <algorithm>

namespace xcs::detail {

bool concurrency_limit::acquire_or_park(permit_waiter& w, std::uint32_t node) {
  std::lock_guard lock(mutex_);
  if (running_ < limit_) {
    peak_ = std::max(peak_, ++running_);
    return true;
  }
  parked_.push_back({&w, node});
  return false;
}

void concurrency_limit::acquire_blocking() {
  std::unique_lock lock(mutex_);
  ++blocked_;
  free_cv_.wait(lock, [&] { return running_ < limit_; });
  --blocked_;
  peak_ = std::max(peak_, ++running_);
}

void concurrency_limit::release() noexcept {
  std::unique_lock lock(mutex_);
  if (!parked_.empty()) {
    // The slot passes to the parked node as it is: running_ stays the same.
    parked p = parked_.front();
    parked_.pop_front();
    lock.unlock();
    p.waiter->permit_granted(p.node);
    return;
  }
  --running_;
  bool wake = blocked_ > 0;
  lock.unlock();
  if (wake) free_cv_.notify_one();
}

std::uint32_t concurrency_limit::peak() const noexcept {
  std::lock_guard lock(mutex_);
  return peak_;
}

}  // namespace xcs::detail
