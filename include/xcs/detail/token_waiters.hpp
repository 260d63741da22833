// SPDX-License-Identifier: MIT
// How token sources order and find their waiters: the queue's key and a queued node's name.
#pragma once

#include <cstdint>
#include <functional>

#include "xcs/detail/token_source.hpp"

namespace xcs::detail {

/// Where a waiter stands in a source's queue: lowest order key first; equal keys in the order
/// they were queued (`serial`, the source's count of queued waiters).
struct waiter_key {
  std::uint64_t order;
  std::uint64_t serial;
  friend bool operator<(const waiter_key& a, const waiter_key& b) noexcept {
    return a.order < b.order || (a.order == b.order && a.serial < b.serial);
  }
  friend bool operator==(const waiter_key&, const waiter_key&) = default;
};

/// A queued node, by its run and id: what withdraw() is given.
struct node_ref {
  token_waiter* waiter;
  std::uint32_t node;
  friend bool operator<(const node_ref& a, const node_ref& b) noexcept {
    if (a.waiter != b.waiter) return std::less<token_waiter*>()(a.waiter, b.waiter);
    return a.node < b.node;
  }
};

}  // namespace xcs::detail
