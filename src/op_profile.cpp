// SPDX-License-Identifier: MIT
// The runtime op profile and direct calls' concurrency slots.
#include "xcs/detail/op_profile.hpp"

#include <algorithm>

#include "xcs/detail/concurrency_limit.hpp"

namespace xcs::detail {

op_profile::op_profile(std::string op_name, bool hinted_blocking, std::uint32_t max_concurrency,
                       bool is_async)
    : name(std::move(op_name)),
      blocking_hint(hinted_blocking),
      async(is_async),
      limit(max_concurrency ? std::make_unique<concurrency_limit>(max_concurrency) : nullptr) {}

op_profile::~op_profile() = default;

void op_profile::fold(std::uint64_t ns) noexcept {
  // A moving average over about four runs: an op's duration drifts (a warm cache, a slower
  // server), and one outlier should not decide alone whether waking a worker pays.
  auto sample = static_cast<std::uint32_t>(std::clamp<std::uint64_t>(ns, 1, 0xffffffffu));
  std::uint32_t old = est_ns.load(std::memory_order_relaxed);
  std::uint32_t next =
      old == 0 ? sample : static_cast<std::uint32_t>((std::uint64_t{old} * 3 + sample) / 4);
  est_ns.store(std::max<std::uint32_t>(next, 1), std::memory_order_relaxed);
}

direct_slot::direct_slot(op_profile& p) : limit_(p.limit.get()) {
  if (limit_) limit_->acquire_blocking();
}

direct_slot::~direct_slot() {
  if (limit_) limit_->release();
}

std::uint32_t concurrency_bound(const op_profile& p) noexcept {
  return p.limit ? p.limit->limit() : 0;
}

std::uint32_t concurrency_peak(const op_profile& p) noexcept {
  return p.limit ? p.limit->peak() : 0;
}

}  // namespace xcs::detail
