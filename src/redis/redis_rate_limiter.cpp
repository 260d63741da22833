// SPDX-License-Identifier: MIT
// xcs::redis_rate_limiter: the checks, then a limiter over a Redis-backed bucket.
#include <fmt/format.h>

#include <memory>
#include <utility>

#include "address.hpp"
#include "redis_bucket.hpp"
#include "xcs/error.hpp"
#include "xcs/redis.hpp"

namespace xcs {

rate_limiter redis_rate_limiter(std::string url, std::string key, double per_second, double burst) {
  return redis_rate_limiter(std::move(url), std::move(key), per_second, burst, redis_options{});
}

rate_limiter redis_rate_limiter(std::string url, std::string key, double per_second, double burst,
                                redis_options options) {
  detail::redis::address where = detail::redis::parse_url(url);
  if (key.empty()) {
    throw error(fmt::format("xcs::redis_rate_limiter: the key must not be empty (URL '{}')", url));
  }
  detail::check_rate("xcs::redis_rate_limiter", per_second, burst);
  if (options.connect_timeout.count() <= 0) {
    throw error(
        fmt::format("xcs::redis_rate_limiter: the connect timeout must be above 0 (got {} ms)",
                    options.connect_timeout.count()));
  }
  if (options.command_timeout.count() <= 0) {
    throw error(
        fmt::format("xcs::redis_rate_limiter: the command timeout must be above 0 (got {} ms)",
                    options.command_timeout.count()));
  }
  return rate_limiter(std::make_shared<detail::redis::redis_bucket>(
      std::move(where), std::move(key), per_second, burst, options));
}

}  // namespace xcs
