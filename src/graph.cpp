// SPDX-License-Identifier: MIT
// Building and printing the IR graph.
#include "xcs/detail/graph.hpp"

#include <cxxabi.h>
#include <fmt/format.h>

#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>

namespace xcs::detail {

void graph::reserve(std::size_t nodes) {
  nodes_.reserve(nodes);
  values_.reserve(2 * nodes);
  input_ids_.reserve(2 * nodes);
}

void graph::clear() noexcept {
  values_.clear();
  nodes_.clear();
  input_ids_.clear();
  constants_.clear();
  arguments_ = 0;
}

value_id graph::add_argument(std::uint32_t position, const std::type_info& type) {
  values_.push_back(value(value_kind::argument, position, no_id, &type, nullptr));
  ++arguments_;
  return static_cast<value_id>(values_.size() - 1);
}

value_id graph::add_element(value_id parent, std::uint32_t index, const std::type_info& type,
                            detail::element_address element) {
  values_.push_back(value(value_kind::element, index, parent, &type, element));
  return static_cast<value_id>(values_.size() - 1);
}

value_id graph::add_constant(std::shared_ptr<const void> data, const std::type_info& type) {
  constants_.push_back(std::move(data));
  values_.push_back(value(value_kind::constant, static_cast<std::uint32_t>(constants_.size() - 1),
                          no_id, &type, nullptr));
  return static_cast<value_id>(values_.size() - 1);
}

value_id graph::add_node(std::string_view name, std::span<const value_id> inputs,
                         const detail::kernel& kernel, const void* fn,
                         std::shared_ptr<const op_identity> op) {
  node n;
  n.name = name;
  n.first_input = static_cast<std::uint32_t>(input_ids_.size());
  n.input_count = static_cast<std::uint32_t>(inputs.size());
  n.kernel = &kernel;
  n.fn = fn;
  n.op = std::move(op);
  input_ids_.insert(input_ids_.end(), inputs.begin(), inputs.end());
  auto id = static_cast<node_id>(nodes_.size());
  if (kernel.size > 0) {
    values_.push_back(value(value_kind::result, id, no_id, kernel.result_type, nullptr));
    n.result = static_cast<value_id>(values_.size() - 1);
  }
  nodes_.push_back(std::move(n));
  return nodes_.back().result;
}

namespace {

bool is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' ||
         c == ':';
}

/// Where the type that ends just before `end` begins: a qualified name with its template
/// arguments, or a builtin of several words ("unsigned long").
std::size_t type_start(const std::string& s, std::size_t end) {
  std::size_t p = end;
  for (;;) {
    if (p > 0 && s[p - 1] == '>') {
      int depth = 0;
      while (p > 0) {
        char c = s[--p];
        if (c == '>') ++depth;
        if (c == '<' && --depth == 0) break;
      }
    }
    while (p > 0 && is_name_char(s[p - 1])) --p;
    // "unsigned long", "long long", "signed char": one type of several words.
    static constexpr std::string_view kPrefixes[] = {"unsigned ", "signed ", "long ", "short "};
    bool more = false;
    for (std::string_view w : kPrefixes) {
      if (p >= w.size() && s.compare(p - w.size(), w.size(), w) == 0 &&
          (p == w.size() || !is_name_char(s[p - w.size() - 1]))) {
        p -= w.size();
        more = true;
        break;
      }
    }
    if (!more) return p;
  }
}

/// "int const*" -> "const int*", as a C++ programmer writes it. A const that follows a `*` or
/// `&` qualifies the pointer and stays where it is.
void const_first(std::string& s) {
  constexpr std::string_view kConst = " const";
  for (std::size_t p = 0; (p = s.find(kConst, p)) != std::string::npos;) {
    std::size_t after = p + kConst.size();
    bool ends = after == s.size() || !is_name_char(s[after]);
    bool names_type = p > 0 && (is_name_char(s[p - 1]) || s[p - 1] == '>');
    if (!ends || !names_type) {
      p = after;
      continue;
    }
    std::size_t start = type_start(s, p);
    s.erase(p, kConst.size());
    s.insert(start, "const ");
    p = after;
  }
}

/// "std::span<int, 18446744073709551615ul>" -> "std::span<int>": the dynamic extent is the
/// default, and nobody writes it.
void drop_dynamic_extent(std::string& s) {
  constexpr std::string_view kSpan = "std::span<";
  for (std::size_t p = 0; (p = s.find(kSpan, p)) != std::string::npos;) {
    std::size_t open = p + kSpan.size() - 1;
    int depth = 0;
    std::size_t close = open;
    for (; close < s.size(); ++close) {
      if (s[close] == '<') ++depth;
      if (s[close] == '>' && --depth == 0) break;
    }
    if (close >= s.size()) return;
    std::size_t comma = s.rfind(", ", close);
    if (comma != std::string::npos && comma > open) {
      std::string_view extent(s.data() + comma + 2, close - comma - 2);
      if (extent == "18446744073709551615ul" || extent == "4294967295u") {
        s.erase(comma, close - comma);
      }
    }
    p = open;
  }
}

}  // namespace

std::string graph::type_name(const std::type_info& type) {
  int status = 0;
  // Owned at once: building `name` below may throw std::bad_alloc.
  std::unique_ptr<char, decltype(&std::free)> raw(
      abi::__cxa_demangle(type.name(), nullptr, nullptr, &status), &std::free);
  std::string name = status == 0 && raw ? raw.get() : type.name();
  // Shorten the standard library's spelled-out defaults.
  const std::string long_string =
      "std::__cxx11::basic_string<char, std::char_traits<char>, std::allocator<char> >";
  for (std::size_t p; (p = name.find(long_string)) != std::string::npos;) {
    name.replace(p, long_string.size(), "std::string");
  }
  for (std::size_t p; (p = name.find("std::__cxx11::")) != std::string::npos;) {
    name.replace(p, 14, "std::");
  }
  // "std::vector<int, std::allocator<int> >" -> "std::vector<int>"
  for (std::size_t p = 0; (p = name.find(", std::allocator<", p)) != std::string::npos;) {
    int depth = 0;
    std::size_t e = p + 2;
    for (; e < name.size(); ++e) {
      if (name[e] == '<') ++depth;
      if (name[e] == '>' && --depth == 0) break;
    }
    if (e >= name.size()) break;
    std::size_t end = e + 1;
    if (end < name.size() && name[end] == ' ') ++end;
    name.erase(p, end - p);
  }
  for (std::size_t p; (p = name.find(" >")) != std::string::npos;) name.erase(p, 1);
  drop_dynamic_extent(name);
  const_first(name);
  return name;
}

namespace {

std::string value_name(const graph& g, value_id v) {
  const value& val = g.values()[v];
  switch (val.kind) {
    case value_kind::argument:
      return fmt::format("arg{}", val.position());
    case value_kind::element:
      return fmt::format("{}[{}]", value_name(g, val.parent), val.element_index());
    case value_kind::constant:
      return fmt::format("const:{}", graph::type_name(*val.type));
    case value_kind::result:
      return fmt::format("%{}", val.producer());
  }
  return "?";
}

}  // namespace

std::string graph::listing() const {
  std::string out;
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    const node& n = nodes_[i];
    std::string args;
    for (value_id v : inputs(n)) {
      if (!args.empty()) args += ", ";
      args += value_name(*this, v);
    }
    // Tags: async, then the op's options (xcs::blocking, xcs::timeout, xcs::retry, ...).
    std::string tags = n.kernel->start ? "async" : "";
    if (n.op && !n.op->options.empty()) tags += (tags.empty() ? "" : ", ") + n.op->options;
    fmt::format_to(std::back_inserter(out), "%{} = {}({}) -> {}{}\n", i, n.name, args,
                   type_name(*n.kernel->result_type), tags.empty() ? "" : " [" + tags + "]");
  }
  return out;
}

std::string graph::dot(std::span<const std::vector<node_id>> groups,
                       std::span<const std::vector<node_id>> batches) const {
  std::string out = "digraph xcs {\n  rankdir=TB;\n  node [shape=box, style=rounded];\n";
  for (std::size_t i = 0; i < arguments_; ++i) {
    fmt::format_to(std::back_inserter(out), "  arg{0} [label=\"arg{0}\", shape=ellipse];\n", i);
  }
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    if (nodes_[i].kernel->start) {
      // An async op: waits for its completion, holding no thread.
      fmt::format_to(std::back_inserter(out),
                     "  n{} [label=\"%{} {} (async)\", style=\"rounded,dashed\"];\n", i, i,
                     nodes_[i].name);
    } else {
      fmt::format_to(std::back_inserter(out), "  n{} [label=\"%{} {}\"];\n", i, i, nodes_[i].name);
    }
  }
  for (std::size_t i = 0; i < nodes_.size(); ++i) {
    for (value_id v : inputs(nodes_[i])) {
      const value& src = values_[root(v)];
      if (src.kind == value_kind::result) {
        fmt::format_to(std::back_inserter(out), "  n{} -> n{};\n", src.producer(), i);
      } else if (src.kind == value_kind::argument) {
        fmt::format_to(std::back_inserter(out), "  arg{} -> n{};\n", src.position(), i);
      }
    }
  }
  // A batch's calls sit at one depth: its cluster goes inside that group's.
  std::vector<std::uint32_t> group_of(nodes_.size(), no_id);
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    for (node_id n : groups[gi]) group_of[n] = static_cast<std::uint32_t>(gi);
  }
  auto draw_batches = [&](std::uint32_t gi) {
    for (std::size_t b = 0; b < batches.size(); ++b) {
      if (batches[b].empty() || group_of[batches[b].front()] != gi) continue;
      fmt::format_to(std::back_inserter(out),
                     "    subgraph cluster_batch{} {{\n      label=\"batch {}: {}\";\n      "
                     "style=filled;\n      color=lightgrey;\n     ",
                     b, b, nodes_[batches[b].front()].name);
      for (node_id n : batches[b]) fmt::format_to(std::back_inserter(out), " n{};", n);
      out += "\n    }\n";
    }
  };
  for (std::size_t gi = 0; gi < groups.size(); ++gi) {
    fmt::format_to(std::back_inserter(out),
                   "  subgraph cluster_group{} {{\n    label=\"group {}\";\n    style=dashed;\n    "
                   "rank=same;\n   ",
                   gi, gi);
    for (node_id n : groups[gi]) fmt::format_to(std::back_inserter(out), " n{};", n);
    out += "\n";
    draw_batches(static_cast<std::uint32_t>(gi));
    out += "  }\n";
  }
  if (groups.empty()) draw_batches(no_id);
  out += "}\n";
  return out;
}

void graph::keep_alive(std::vector<std::shared_ptr<const void>>& out) const {
  out.insert(out.end(), constants_.begin(), constants_.end());
  for (const node& n : nodes_) {
    if (n.op) out.push_back(n.op);
  }
}

}  // namespace xcs::detail
