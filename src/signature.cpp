// SPDX-License-Identifier: MIT
// Printing signatures and saying how two differ.
#include "xcs/detail/signature.hpp"

#include <fmt/format.h>

#include "xcs/detail/graph.hpp"

namespace xcs::detail {

std::string signature::arg_string(std::uint32_t arg) const {
  std::string s = graph::type_name(*arg_types_[arg]);
  for (std::size_t k = 0; k < sizes_.size(); ++k) {
    if (owners_[k] == arg) s += fmt::format("[{}]", sizes_[k]);
  }
  return s;
}

std::string signature::to_string() const {
  std::string out = "(";
  for (std::uint32_t i = 0; i < arg_count_; ++i) {
    if (i) out += ", ";
    out += arg_string(i);
  }
  return out + ")";
}

std::string signature::difference(const signature& before) const {
  if (arg_count_ != before.arg_count_) {
    return fmt::format("{} arguments, were {}: {}, was {}", arg_count_, before.arg_count_,
                       to_string(), before.to_string());
  }
  for (std::uint32_t i = 0; i < arg_count_; ++i) {
    if (*arg_types_[i] != *before.arg_types_[i]) {
      return fmt::format("arg {}: {}, was {}", i, arg_string(i), before.arg_string(i));
    }
  }
  for (std::size_t k = 0; k < sizes_.size() && k < before.sizes_.size(); ++k) {
    if (sizes_[k] != before.sizes_[k]) {
      std::uint32_t arg = owners_[k];
      std::string was;
      for (std::size_t j = 0; j < before.sizes_.size(); ++j) {
        if (before.owners_[j] == arg) was += fmt::format("[{}]", before.sizes_[j]);
      }
      return fmt::format("arg {}: {}, was {}", arg, arg_string(arg), was);
    }
  }
  return fmt::format("now {}, was {}", to_string(), before.to_string());
}

}  // namespace xcs::detail
