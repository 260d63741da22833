// SPDX-License-Identifier: MIT
// Parsing `redis://host:port/db` URLs.
#include "address.hpp"

#include <fmt/format.h>

#include <charconv>
#include <system_error>

#include "xcs/error.hpp"

namespace xcs::detail::redis {
namespace {

constexpr std::string_view kScheme = "redis://";

[[noreturn]] void bad_url(std::string_view url, std::string_view why) {
  throw error(
      fmt::format("xcs::redis: malformed Redis URL '{}': {} (expected redis://host:port or "
                  "redis://host:port/db)",
                  url, why));
}

/// `text` as a whole decimal number in [low, high], or -1.
long number_in(std::string_view text, long low, long high) noexcept {
  long value = -1;
  const char* end = text.data() + text.size();
  auto [at, ec] = std::from_chars(text.data(), end, value);
  if (text.empty() || ec != std::errc() || at != end || value < low || value > high) return -1;
  return value;
}

}  // namespace

std::string address::connection_key() const { return fmt::format("{}:{}/{}", host, port, db); }

address parse_url(std::string_view url) {
  if (url.substr(0, kScheme.size()) != kScheme) bad_url(url, "it does not start with redis://");
  std::string_view rest = url.substr(kScheme.size());
  const std::size_t slash = rest.find('/');
  std::string_view authority = rest.substr(0, slash);
  if (authority.find('@') != std::string_view::npos) {
    bad_url(url, "a user or password (user:password@) is not supported");
  }
  address a;
  a.url = std::string(url);

  std::string_view port_text;
  if (!authority.empty() && authority.front() == '[') {  // [IPv6]:port
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) bad_url(url, "an IPv6 address without its ']'");
    a.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') bad_url(url, "something other than :port after the host");
      port_text = after.substr(1);
      if (port_text.empty()) bad_url(url, "an empty port");
    }
  } else {
    const std::size_t colon = authority.find(':');
    a.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) {
      port_text = authority.substr(colon + 1);
      if (port_text.empty()) bad_url(url, "an empty port");
    }
  }
  if (a.host.empty()) bad_url(url, "no host");
  if (!port_text.empty()) {
    const long port = number_in(port_text, 1, 65535);
    if (port < 0) bad_url(url, fmt::format("the port '{}' is not a number in 1..65535", port_text));
    a.port = static_cast<int>(port);
  }
  if (slash != std::string_view::npos) {
    std::string_view db_text = rest.substr(slash + 1);
    if (!db_text.empty()) {
      const long db = number_in(db_text, 0, 1'000'000);
      if (db < 0) {
        bad_url(url, fmt::format("the database '{}' is not a number (0, 1, ...)", db_text));
      }
      a.db = static_cast<int>(db);
    }
  }
  return a;
}

}  // namespace xcs::detail::redis
