// SPDX-License-Identifier: MIT
// Where a Redis server is: a `redis://host:port/db` URL, parsed and checked.
#pragma once

#include <string>
#include <string_view>

namespace xcs::detail::redis {

/// A server and database, from a URL.
struct address {
  std::string url;   ///< as the user gave it, for messages
  std::string host;  ///< a name or an IPv4 address; an IPv6 address without its brackets
  int port = 6379;
  int db = 0;
  /// "host:port/db": one connection per process for each.
  std::string connection_key() const;
};

/// Parses `redis://host[:port][/db]`. A pure function: throws xcs::error naming `url` and what
/// is wrong with it (another scheme, no host, a port outside 1..65535, a database that is not
/// a number, a password, anything after the database). Thread-safe.
///
///   address a = parse_url("redis://127.0.0.1:6380/2");  // host 127.0.0.1, port 6380, db 2
address parse_url(std::string_view url);

}  // namespace xcs::detail::redis
