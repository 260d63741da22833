// SPDX-License-Identifier: MIT
// The IR: the values a trace saw and the op nodes that produce them, in program order.
#pragma once

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <typeinfo>
#include <vector>

namespace xcs::detail {

using value_id = std::uint32_t;
using node_id = std::uint32_t;
/// Marks "no value" (the result of a void op) and "no node".
inline constexpr std::uint32_t no_id = ~std::uint32_t{0};

/// Where a value comes from.
enum class value_kind : std::uint8_t {
  argument,  ///< an argument of the jitted call
  element,   ///< an element of a container argument (or of a container element)
  constant,  ///< a plain value the body passed to an op or operator
  result,    ///< the result of a node
};

struct async_slot;
struct cache_kernel;

/// What the IR knows of an op: its immutable identity (name and options). What is learned
/// while it runs lives in its runtime state (detail/op_runtime.hpp), made with it.
struct op_identity {
  op_identity(std::string op_name, bool hinted_blocking, bool is_async,
              std::uint32_t concurrency_bound, std::string options_text = {})
      : name(std::move(op_name)),
        blocking_hint(hinted_blocking),
        async(is_async),
        max_concurrency(concurrency_bound),
        options(std::move(options_text)) {}
  op_identity(const op_identity&) = delete;
  op_identity& operator=(const op_identity&) = delete;
  virtual ~op_identity() = default;

  const std::string name;
  /// The user said the op blocks (I/O, sleep); it runs on the blocking lane from the start.
  const bool blocking_hint;
  /// An `xcs::async_op`: its function starts the work and returns, and a completion ends it.
  const bool async;
  /// xcs::max_concurrency's bound, or 0.
  const std::uint32_t max_concurrency;
  /// The op's options as explain() shows them ("blocking, timeout 200 ms, retry 3 attempts
  /// from 20 ms, rate_limit 18/s burst 5"); empty without any.
  const std::string options;
};

/// How a node runs, type-erased: `invoke(fn, inputs, n, out)` calls the op on `n` typed inputs
/// and constructs its result at `out` (unused for void ops). Kernels are static function
/// tables, not state: the IR holds no per-call and no learned state. One static instance per
/// instantiation, so nodes refer to it by pointer and tracing allocates nothing for it.
struct kernel {
  void (*invoke)(const void* fn, const void* const* inputs, std::uint32_t n, void* out);
  void (*destroy)(void* value) noexcept;  ///< null for void results
  std::size_t size;
  std::size_t align;
  const std::type_info* result_type;  ///< typeid(void) for void ops
  /// Async ops only, else null: calls the op's function on the inputs with a completion for
  /// `slot` and returns once the function does (recording what it throws in the slot), while
  /// the work goes on elsewhere. Such a kernel has no `invoke`.
  void (*start)(const void* fn, const void* const* inputs, async_slot& slot) noexcept;
  /// The callable takes a `std::stop_token` after its inputs: the engine gives each instance
  /// one (see current_stop_token).
  bool wants_stop = false;
  /// An op with a weighted rate limit: the tokens an instance takes, from its inputs
  /// (`weight`: the op's weight function); else null (one token).
  double (*weigh)(const void* weight, const void* const* inputs) = nullptr;
  /// Moves a result from `from` to `to` and destroys it at `from` (an op with a timeout runs
  /// each attempt into storage of its own); null for void results and immovable types.
  void (*relocate)(void* to, void* from) = nullptr;
  /// An op made with xcs::cache: its inputs' key and copies of its result; else null.
  const cache_kernel* cache = nullptr;
  /// `destroy` does nothing (a void or trivially destructible result): a run need not call it.
  /// False unless make_kernel knows it, so that an unknown kernel's results are destroyed.
  bool trivial_destroy = false;
};

/// Address of element `index` of a container value, type-erased.
using element_address = const void* (*)(const void* container, std::size_t index);

/// One value of the IR: where it comes from (`kind`) and, through the accessor for that kind,
/// which one (an accessor of another kind answers no_id).
class value {
 public:
  value_kind kind;
  value_id parent = no_id;  ///< for elements: the container
  const std::type_info* type = nullptr;
  detail::element_address element = nullptr;  ///< for elements: how to find it in `parent`

  /// argument: its position among the call's arguments.
  std::uint32_t position() const noexcept { return of(value_kind::argument); }
  /// element: its index in `parent`.
  std::uint32_t element_index() const noexcept { return of(value_kind::element); }
  /// constant: its slot in graph::constant().
  std::uint32_t constant_slot() const noexcept { return of(value_kind::constant); }
  /// result: the node that produces it.
  std::uint32_t producer() const noexcept { return of(value_kind::result); }

 private:
  friend class graph;
  value(value_kind k, std::uint32_t which, value_id container, const std::type_info* t,
        detail::element_address e) noexcept
      : kind(k), parent(container), type(t), element(e), which_(which) {}
  std::uint32_t of(value_kind k) const noexcept { return kind == k ? which_ : no_id; }

  std::uint32_t which_;  // the position, element index, constant slot or node, by kind
};

/// One op call (or operator) of the IR.
struct node {
  std::string_view name;      ///< op name, or the operator's spelling ("+", "==")
  std::uint32_t first_input;  ///< into graph::input_ids()
  std::uint32_t input_count;
  value_id result = no_id;  ///< no_id for void ops
  const detail::kernel* kernel = nullptr;
  const void* fn = nullptr;  ///< the callable; null for stateless kernels (operators)
  /// The op's identity, whose owner also owns `fn`; null for operators and packs.
  std::shared_ptr<const op_identity> op;
};

/// The IR graph of one trace. Nodes are in program order, so every input of a node is an
/// argument, an element, a constant or the result of an earlier node.
/// Not thread-safe to build; immutable and freely shareable once the trace is over.
class graph {
 public:
  value_id add_argument(std::uint32_t position, const std::type_info& type);
  value_id add_element(value_id parent, std::uint32_t index, const std::type_info& type,
                       detail::element_address element);
  value_id add_constant(std::shared_ptr<const void> data, const std::type_info& type);
  /// Records a node; returns its result value (no_id for void kernels).
  value_id add_node(std::string_view name, std::span<const value_id> inputs,
                    const detail::kernel& kernel, const void* fn,
                    std::shared_ptr<const op_identity> op);

  /// Makes room for about `nodes` nodes (a staged signature's last call recorded that many).
  void reserve(std::size_t nodes);
  /// Removes every value, node and constant, keeping the vectors' capacity.
  void clear() noexcept;

  std::span<const value> values() const { return values_; }
  std::span<const node> nodes() const { return nodes_; }
  std::span<const value_id> inputs(const node& n) const {
    return {input_ids_.data() + n.first_input, n.input_count};
  }
  std::span<const value_id> input_ids() const { return input_ids_; }
  const void* constant(std::uint32_t slot) const { return constants_[slot].get(); }
  /// Adds to `out` what a run of this graph may still use once the graph is gone: its
  /// constants and its ops.
  void keep_alive(std::vector<std::shared_ptr<const void>>& out) const;
  std::size_t argument_count() const { return arguments_; }

  /// The value `v` is an element of (through any depth of nesting), or `v` itself.
  value_id root(value_id v) const {
    while (values_[v].kind == value_kind::element) v = values_[v].parent;
    return v;
  }
  /// The node producing `v`, or no_id if `v` is not a node result.
  node_id producer(value_id v) const { return values_[v].producer(); }

  /// One line per node: `%3 = summarize(%0) -> std::string`.
  std::string listing() const;
  /// Graphviz DOT; `groups`, if given, are drawn as ranks, and `batches` (the calls a plan
  /// sends to a batch op's function together) as filled clusters inside them.
  std::string dot(std::span<const std::vector<node_id>> groups = {},
                  std::span<const std::vector<node_id>> batches = {}) const;

  /// Readable name of a type ("std::string", "std::vector<int>").
  static std::string type_name(const std::type_info& type);

 private:
  std::vector<value> values_;
  std::vector<node> nodes_;
  std::vector<value_id> input_ids_;
  std::vector<std::shared_ptr<const void>> constants_;
  std::size_t arguments_ = 0;
};

}  // namespace xcs::detail
