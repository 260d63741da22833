// SPDX-License-Identifier: MIT
// Printing signatures and saying how two differ.
#include "xcs/signature.hpp"

#include <fmt/format.h>

#include "xcs/graph.hpp"

namespace xcs {

std::string signature::to_string() const {
  std::string sizes;
  for (std::size_t s : sizes_) sizes += fmt::format("[{}]", s);
  std::string types = graph::type_name(*types_);
  // "xcs::signature::type_list<A, B>" -> "(A, B)"
  if (auto p = types.find('<'); p != std::string::npos && types.back() == '>') {
    types = "(" + types.substr(p + 1, types.size() - p - 2) + ")";
  }
  return sizes.empty() ? types : types + " sizes " + sizes;
}

std::string signature::difference(const signature& before) const {
  if (*types_ != *before.types_) {
    return fmt::format("argument types are now {}, were {}", to_string(), before.to_string());
  }
  for (std::size_t i = 0; i < sizes_.size() && i < before.sizes_.size(); ++i) {
    if (sizes_[i] != before.sizes_[i]) {
      return fmt::format("container size #{} is now [{}], was [{}] (types {})", i, sizes_[i],
                         before.sizes_[i], to_string());
    }
  }
  return fmt::format("container sizes changed: now {}, was {}", to_string(), before.to_string());
}

}  // namespace xcs
