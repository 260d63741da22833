// SPDX-License-Identifier: MIT
// A call's deadline and stop token on the thread that works for it (see call_limits.hpp).
#include "xcs/detail/call_limits.hpp"

#include <string>
#include <utility>

#include "xcs/error.hpp"

namespace xcs::detail {

class trace_context;
trace_context* exchange_current_trace(trace_context* ctx) noexcept;  // trace.cpp

thread_local const call_limits* t_limits = nullptr;

namespace {
thread_local const std::stop_token* t_instance_stop = nullptr;
}  // namespace

void call_limits::check(std::string_view what) const {
  if (stop.stop_requested()) throw_cancelled(what);
  if (deadline != steady_time::max() && std::chrono::steady_clock::now() >= deadline) {
    throw_deadline_exceeded(what);
  }
}

void call_limits::check_op(std::string_view name) const {
  if (!stop.stop_requested() &&
      (deadline == steady_time::max() || std::chrono::steady_clock::now() < deadline)) {
    return;
  }
  check("op '" + std::string(name) + "'");
}

limits_scope::limits_scope(const call_limits* l) noexcept : saved_(std::exchange(t_limits, l)) {}
limits_scope::~limits_scope() { t_limits = saved_; }

std::stop_token current_stop_token() noexcept {
  if (t_instance_stop) return *t_instance_stop;
  if (t_limits) return t_limits->stop;
  return {};
}

instance_stop_scope::instance_stop_scope(const std::stop_token* t) noexcept
    : saved_(std::exchange(t_instance_stop, t)) {}
instance_stop_scope::~instance_stop_scope() { t_instance_stop = saved_; }

std::string describe_ns(std::int64_t ns) {
  if (ns != 0 && ns % 1'000'000'000 == 0) return std::to_string(ns / 1'000'000'000) + " s";
  if (ns != 0 && ns % 1'000'000 == 0) return std::to_string(ns / 1'000'000) + " ms";
  if (ns != 0 && ns % 1'000 == 0) return std::to_string(ns / 1'000) + " us";
  return std::to_string(ns) + " ns";
}

void throw_deadline_exceeded(std::string_view what) {
  throw deadline_exceeded("xcs: the call's deadline passed before " + std::string(what) +
                          " was done");
}

void throw_cancelled(std::string_view what) {
  throw cancelled("xcs: the call was cancelled (stop requested) before " + std::string(what) +
                  " was done");
}

fiber_locals fiber_locals::take() noexcept {
  fiber_locals l{exchange_current_trace(nullptr), std::exchange(t_limits, nullptr),
                 std::exchange(t_instance_stop, nullptr)};
  return l;
}

void fiber_locals::put(const fiber_locals& l) noexcept {
  exchange_current_trace(static_cast<trace_context*>(l.trace));
  t_limits = l.limits;
  t_instance_stop = l.stop;
}

}  // namespace xcs::detail
