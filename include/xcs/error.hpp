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

/// A call made with `with_deadline` (or inside one) that was not done in time. No op of the
/// call starts after the deadline; ops still running were asked to stop and were abandoned.
/// Also thrown to an op by a jitted call it makes after the inherited deadline passed.
class deadline_exceeded : public error {
 public:
  using error::error;
};

/// A call made with `with_stop_token` (or inside one) whose stop was requested. As for a
/// deadline, no op starts after the stop and ops still running were abandoned.
class cancelled : public error {
 public:
  using error::error;
};

/// An op instance with `xcs::timeout(d)` that had not finished `d` after it started. Stop was
/// requested on it; its late result or exception is discarded.
class timeout_error : public error {
 public:
  using error::error;
};

}  // namespace xcs
