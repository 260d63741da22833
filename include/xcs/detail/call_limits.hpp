// SPDX-License-Identifier: MIT
// What bounds a call: its deadline and its stop token, inherited by the calls its ops make.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <stop_token>
#include <string>
#include <string_view>

namespace xcs::detail {

using steady_time = std::chrono::steady_clock::time_point;

/// A call's deadline and stop token. A jitted call made with `with_deadline` or
/// `with_stop_token` sets them for the calls it makes on this thread (the direct call of a
/// fallback runs its ops here), and the run engine sets them around each op of such a call,
/// so a jitted call made inside an op inherits what is left of the outer deadline and the
/// outer stop.
struct call_limits {
  steady_time deadline = steady_time::max();
  std::stop_token stop;

  bool bounded() const noexcept { return deadline != steady_time::max() || stop.stop_possible(); }
  /// Throws xcs::cancelled if stop was requested, or xcs::deadline_exceeded if the deadline
  /// has passed; `what` names the point of the check (an op's name, "the call").
  void check(std::string_view what) const;
  /// The same at the start or end of op `name` of a direct call.
  void check_op(std::string_view name) const;

  /// The limits of the call this thread works for, or null (no bound anywhere).
  static const call_limits* current() noexcept;
};

/// What call_limits::current() returns (set by limits_scope; fibers carry it along).
extern thread_local const call_limits* t_limits;
inline const call_limits* call_limits::current() noexcept { return t_limits; }

/// Makes `l` the current limits of this thread for its lifetime (null: none).
class limits_scope {
 public:
  explicit limits_scope(const call_limits* l) noexcept;
  ~limits_scope();
  limits_scope(const limits_scope&) = delete;
  limits_scope& operator=(const limits_scope&) = delete;

 private:
  const call_limits* saved_;
};

/// The stop token of the op instance this thread runs (the engine sets it around an op that
/// takes one), else the current call's, else an empty token.
std::stop_token current_stop_token() noexcept;

/// Makes `t` the running op instance's stop token for its lifetime.
class instance_stop_scope {
 public:
  explicit instance_stop_scope(const std::stop_token* t) noexcept;
  ~instance_stop_scope();
  instance_stop_scope(const instance_stop_scope&) = delete;
  instance_stop_scope& operator=(const instance_stop_scope&) = delete;

 private:
  const std::stop_token* saved_;
};

/// One stop token for two: stop is requested on it when it is on either.
class joined_stop {
 public:
  joined_stop(std::stop_token a, std::stop_token b) {
    if (!a.stop_possible()) {
      token_ = std::move(b);
    } else if (!b.stop_possible()) {
      token_ = std::move(a);
    } else {
      source_ = std::stop_source();
      token_ = source_.get_token();
      a_.emplace(a, relay{&source_});
      b_.emplace(b, relay{&source_});
    }
  }
  joined_stop(const joined_stop&) = delete;
  joined_stop& operator=(const joined_stop&) = delete;
  const std::stop_token& token() const noexcept { return token_; }

 private:
  struct relay {
    std::stop_source* s;
    void operator()() const noexcept { s->request_stop(); }
  };
  std::stop_source source_{std::nostopstate};
  std::stop_token token_;
  std::optional<std::stop_callback<relay>> a_, b_;
};

/// A duration for a message: "250 ms", "-3 s", "1500 ns".
std::string describe_ns(std::int64_t ns);

/// The messages of the exceptions a stopped call throws.
[[noreturn]] void throw_deadline_exceeded(std::string_view what);
[[noreturn]] void throw_cancelled(std::string_view what);

/// This thread's xcs state that belongs to the code running on it rather than to the thread
/// (the trace, the call's limits, the op instance's token). A fiber that suspends takes it
/// along, so that the work its worker runs meanwhile starts clean and does not see it.
struct fiber_locals {
  void* trace;
  const call_limits* limits;
  const std::stop_token* stop;
  /// Takes this thread's state and leaves it clean.
  static fiber_locals take() noexcept;
  /// Puts `l` back on this thread.
  static void put(const fiber_locals& l) noexcept;
};

}  // namespace xcs::detail
