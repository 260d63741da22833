// SPDX-License-Identifier: MIT
// Rate limits: a token bucket that ops, plans and threads share.
#pragma once

#include <memory>

#include "xcs/detail/token_bucket.hpp"

namespace xcs {

/// A token bucket for `xcs::rate_limit`: it refills continuously at `per_second` tokens a
/// second up to `burst` tokens, and starts full, so the first `burst` calls go at once and
/// later ones at the rate. Copies share one bucket: every op given a copy draws from the same
/// tokens. Thread-safe.
///
///   xcs::rate_limiter api(10, 5);  // 10 calls a second, bursts of up to 5
///   xcs::rate_limiter same = api;  // the same bucket
///   double now = api.available();  // 5 at first
class rate_limiter {
 public:
  /// Throws xcs::error naming the bad value when `per_second` is not above 0 or not finite,
  /// or when `burst` is below 1 or not finite.
  rate_limiter(double per_second, double burst);

  double per_second() const noexcept { return bucket_->per_second(); }
  double burst() const noexcept { return bucket_->burst(); }
  /// Tokens in the bucket now: refilled to now, less those taken.
  double available() const noexcept { return bucket_->available(); }

  /// The shared bucket (for the engine).
  detail::token_bucket& bucket() const noexcept { return *bucket_; }
  /// The same, shared (an op's rate limit keeps it alive).
  std::shared_ptr<detail::token_bucket> shared_bucket() const noexcept { return bucket_; }

 private:
  std::shared_ptr<detail::token_bucket> bucket_;
};

}  // namespace xcs
