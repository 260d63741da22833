// SPDX-License-Identifier: MIT
// The joined line, and the check of the staged body.
#include "report.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace users {

std::string join_line(const user& u, const user& manager) {
  return fmt::format("{} ({}) -> {} ({})", u.name, u.id, manager.name, manager.id);
}

std::size_t count_without_manager_fn::operator()(const std::vector<user>& people) const {
  return static_cast<std::size_t>(
      std::count_if(people.begin(), people.end(), [](const user& u) { return u.manager_id == 0; }));
}

}  // namespace users
