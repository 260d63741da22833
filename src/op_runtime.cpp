// SPDX-License-Identifier: MIT
// An op's runtime state, and the concurrency permits of its direct calls.
#include "xcs/detail/op_runtime.hpp"

#include <algorithm>

#include "monitor.hpp"
#include "xcs/detail/concurrency_limit.hpp"

namespace xcs::detail {

op_runtime::op_runtime(std::string op_name, bool hinted_blocking, std::uint32_t max_concurrency,
                       bool is_async)
    : op_identity(std::move(op_name), hinted_blocking, is_async, max_concurrency),
      limit(max_concurrency ? std::make_unique<concurrency_limit>(max_concurrency) : nullptr) {}

op_runtime::~op_runtime() { wait_for_monitor_pass(); }

void op_runtime::fold(std::uint64_t ns) noexcept {
  // A moving average over about four runs: an op's duration drifts (a warm cache, a slower
  // server), and one outlier should not decide alone whether waking a worker pays.
  auto sample = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(ns, 1, 0xffffffffu));
  std::uint32_t old = est_ns.load(std::memory_order_relaxed);
  std::uint32_t next =
      old == 0 ? sample : static_cast<std::uint32_t>((std::uint64_t{old} * 3 + sample) / 4);
  est_ns.store(std::max<std::uint32_t>(next, 1), std::memory_order_relaxed);
}

direct_permit::direct_permit(op_runtime& p) : limit_(p.limit.get()) {
  if (limit_) limit_->acquire_blocking();
}

direct_permit::~direct_permit() {
  if (limit_) limit_->release();
}

std::uint32_t concurrency_bound(const op_runtime& p) noexcept {
  return p.limit ? p.limit->limit() : 0;
}

std::uint32_t concurrency_peak(const op_runtime& p) noexcept {
  return p.limit ? p.limit->peak() : 0;
}

}  // namespace xcs::detail
