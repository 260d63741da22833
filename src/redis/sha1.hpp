// SPDX-License-Identifier: MIT
// SHA-1, for the names Redis gives scripts (EVALSHA): not for security.
#pragma once

#include <string>
#include <string_view>

namespace xcs::detail::redis {

/// The SHA-1 digest of `data` in 40 lowercase hex digits, as Redis's SCRIPT LOAD returns it
/// (FIPS 180-4). Pure; thread-safe.
std::string sha1_hex(std::string_view data);

}  // namespace xcs::detail::redis
