// SPDX-License-Identifier: MIT
// Errors that xcs itself reports. Exceptions thrown by a user's ops are never wrapped.
#pragma once

#include <stdexcept>
#include <string>

namespace xcs {

/// Base of every exception xcs throws on its own behalf (misuse, strict-mode fallbacks).
/// An exception thrown by an op is the op's own and reaches the caller unchanged.
class error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// Thrown when a traced value is used outside the trace that created it.
class trace_error : public error {
 public:
  using error::error;
};

}  // namespace xcs
