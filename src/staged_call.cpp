// SPDX-License-Identifier: MIT
// A traced call as the trace's sink: it owns the staged run and the cache entry, counts the
// call, names serial reads, and makes a signature that records no node fall back.
#include <fmt/format.h>

#include <exception>
#include <memory>
#include <mutex>
#include <string>

#include "jit_core_impl.hpp"
#include "xcs/error.hpp"

namespace xcs::detail {

namespace {

/// A trace of more nodes than this is not kept for the next call: its allocations are a small
/// part of what such a call costs, and its buffers would hold memory between calls (about
/// 140 bytes a node).
constexpr std::size_t kKeptTraceNodes = 1024;

/// Why a staged signature whose call recorded no node falls back.
std::string nothing_recorded(const trace_context& ctx) {
  std::string types;
  for (const value& v : ctx.ir().values()) {
    if (v.kind != value_kind::argument) continue;
    types += fmt::format("{}{}", types.empty() ? "" : ", ", graph::type_name(*v.type));
  }
  // A read of an argument (or an element) before any op: the parameters converted at entry.
  const value_id read = ctx.staged_value();
  const value_kind kind = read == no_id ? value_kind::result : ctx.ir().values()[read].kind;
  if (kind == value_kind::argument || kind == value_kind::element) {
    return fmt::format(
        "the callable takes plain types ({}): its parameters convert at entry, so every op "
        "runs in place; write `auto` parameters",
        types);
  }
  return fmt::format(
      "the body recorded no op ({}): every op ran in place, on plain values; pass the jitted "
      "function's (traced) arguments, or op results, to the ops",
      ctx.staged_reason(false));
}

}  // namespace

void staged_call::went_staged(const trace_context& ctx) {
  ctx_ = &ctx;
  cache_entry& e = *ticket_.entry;
  run_ = e.runs.take([] { return new run(); });
  run_->reset(ctx.ir(), args_, copier_, {}, &core_.impl_->ops);
  for (node_id n = 0; n < ctx.ir().nodes().size(); ++n) run_->append(n);
  if (ticket_.kind != call_kind::trace) return;
  // The first call of the signature: the calls waiting for its trace run staged too, at once.
  jit_core::impl& m = *core_.impl_;
  try {
    std::string text = ctx.staged_reason(false);
    std::lock_guard info(m.info_mutex);
    m.staged_text = std::move(text);
    m.staged_site = ctx.staged_site();
  } catch (...) {
  }
  log([&] { return fmt::format("staged {}: {}", sig_.to_string(), ctx.staged_reason()); });
  m.publish(e, call_kind::staged);
  ticket_.kind = call_kind::staged;
  first_of_signature_ = true;
}

void staged_call::node_added(node_id n) { run_->append(n); }

const void* staged_call::read(value_id v, const std::type_info&, const void* pc) {
  bool serial = false;
  auto note = [&] {
    if (!serial) return;
    ++serial_reads_;
    jit_core::impl& m = *core_.impl_;
    if (m.serial_read_named.exchange(true, std::memory_order_relaxed)) return;
    try {
      std::string text = fmt::format(
          "the read of {} waited with no other op in flight, so the body ran serially there",
          ctx_->describe(v));
      std::string advice =
          "; start the ops before reading any result: xcs::map over a vector, a vector of op "
          "results built before the first read, or the read moved into an op";
      code_site site = code_site::capture(pc);
      log([&] { return text + source_line(site) + advice; });
      std::lock_guard info(m.info_mutex);
      m.serial_text = std::move(text);
      m.serial_advice = std::move(advice);
      m.serial_site = site;
    } catch (...) {
    }
  };
  try {
    const void* a = run_->wait_value(v, serial);
    note();
    return a;
  } catch (...) {
    note();
    throw;
  }
}

std::exception_ptr staged_call::drain() noexcept {
  if (!run_ || drained_once_) return drained_;
  drained_once_ = true;
  drained_ = run_->drain();
  jit_core::impl& m = *core_.impl_;
  const std::size_t nodes = ctx_->ir().nodes().size();
  m.mine().add(&call_counters::serial_reads, serial_reads_);
  m.record_staged(*run_, nodes, nodes == 0 && first_of_signature_);
  // Nodes still running (the call stopped or failed fast): the run is left behind now, while
  // the trace's graph, whose constants and ops they may use, is still here to keep.
  if (run_->leave_behind(nullptr)) {
    run_ = nullptr;
    return drained_;
  }
  auto& hint = ticket_.entry->staged_nodes;
  if (hint.load(std::memory_order_relaxed) != nodes) {
    hint.store(static_cast<std::uint32_t>(nodes), std::memory_order_relaxed);
  }
  if (nodes == 0 && first_of_signature_) {
    // Nothing ran in parallel, nor could: the signature falls back, so its later calls cost
    // what a direct call costs.
    try {
      cache_entry& e = *ticket_.entry;
      std::string why = nothing_recorded(*ctx_);
      log([&] { return fmt::format("fallback for {}: {}", sig_.to_string(), why); });
      {
        std::lock_guard info(m.info_mutex);
        m.fallback_reason = why;
        m.out_of_memory = false;
      }
      e.cause = fallback_cause::untraceable;
      e.reason = std::move(why);
      e.kind.store(call_kind::direct, std::memory_order_release);
      fell_back_ = true;
    } catch (...) {
    }
  }
  return drained_;
}

void staged_call::lend_buffers(graph& ir, result_recipe& recipe) {
  if (!ticket_.entry) return;
  cache_entry& e = *ticket_.entry;
  // Acquire: pairs with the release of the call that gave them back, which wrote them.
  lent_.reset(e.spare_trace.exchange(nullptr, std::memory_order_acquire));
  if (lent_) {
    ir = std::move(lent_->ir);
    recipe = std::move(lent_->recipe);
  } else if (std::size_t n = e.staged_nodes.load(std::memory_order_relaxed)) {
    ir.reserve(n);
  }
}

void staged_call::give_back_buffers(graph& ir, result_recipe& recipe) noexcept {
  // Not before the drain: until then the run's nodes may read the graph's constants (after
  // it, a run left behind keeps its own references to them).
  if (!ticket_.entry || !drained_once_ || ir.nodes().size() > kKeptTraceNodes) return;
  try {
    if (!lent_) lent_ = std::make_unique<trace_output>();
  } catch (...) {
    return;  // no memory for the holder: the buffers are freed with the trace
  }
  ir.clear();
  recipe.clear();
  lent_->ir = std::move(ir);
  lent_->recipe = std::move(recipe);
  // Release: the next call that takes them sees them written. One set is kept: a set another
  // call gave back meanwhile is freed.
  delete ticket_.entry->spare_trace.exchange(lent_.release(), std::memory_order_acq_rel);
}

finished_run staged_call::values(const result_recipe& recipe) {
  return finished_run(*run_, nullptr, recipe);
}

void staged_call::finish_fallback() {
  if (!fell_back_) return;
  core_.impl_->mine().add(&call_counters::fallback_calls, 1);
  if (jit_core::strict()) {
    throw error("xcs (XCS_STRICT): the call fell back: " + ticket_.entry->reason);
  }
}

staged_call::~staged_call() {
  if (!run_) return;
  (void)drain();
  ticket_.entry->runs.give(run_);
}

}  // namespace xcs::detail
