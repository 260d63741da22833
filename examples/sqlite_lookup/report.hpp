// SPDX-License-Identifier: MIT
// The example's body as xcs ops: look up each user, then each user's manager, then join them
// into one line each; the lookup is a parameter, so one body runs over every kind of lookup op.
#pragma once

#include <xcs/xcs.hpp>

#include <cstddef>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "users_db.hpp"

namespace users {

/// "Name (id) -> Manager's name (manager's id)".
std::string join_line(const user& u, const user& manager);

/// The op bodies. Each only reads its arguments and the database, so instances run on many
/// threads at once.
struct find_fn {
  const database* db;
  user operator()(std::int64_t id) const { return db->find(id); }
};
struct find_all_fn {
  const database* db;
  std::vector<user> operator()(const std::vector<std::int64_t>& ids) const {
    return db->find_all(ids);
  }
};
struct manager_id_fn {
  std::int64_t operator()(const user& u) const { return u.manager_id; }
};
struct join_fn {
  std::string operator()(const user& u, const user& manager) const { return join_line(u, manager); }
};
struct count_without_manager_fn {
  std::size_t operator()(const std::vector<user>& people) const;
};

inline const auto manager_id = xcs::op("manager_id", manager_id_fn{});
inline const auto join = xcs::op("join", join_fn{});
inline const auto count_without_manager =
    xcs::op("count_without_manager", count_without_manager_fn{});

/// The lookup as a plain op: one single-row query per call; a jitted call runs independent
/// calls at the same time, each on a connection of its own from the pool.
inline auto plain_lookup(const database& db) { return xcs::op("lookup", find_fn{&db}); }

/// The lookup as a batch op: the calls that are ready together (in a plan, one dependency
/// level; in a staged call, those recorded since the last read) go to `database::find_all`
/// together, at most `max_batch` ids a query.
inline auto batched_lookup(const database& db, std::size_t max_batch) {
  return xcs::batch_op("lookup", find_all_fn{&db}, xcs::max_batch(max_batch));
}

/// The queries the batched lookup sends for the body over `lookups` ids: two levels, each
/// ⌈lookups / max_batch⌉ batches.
constexpr std::uint64_t batched_queries(std::uint64_t lookups, std::uint64_t max_batch) {
  return 2 * ((lookups + max_batch - 1) / max_batch);
}

/// The body: for each id, the user; then each user's manager; then the two joined. Called with
/// a std::vector of ids it runs the lookups one after another (2 queries per id with a plain
/// op); under xcs::jit the lookups of one level are independent of each other.
template <class Lookup>
struct manager_report {
  Lookup lookup;  // an op taking an id and returning a user

  template <class Ids>
  auto operator()(const Ids& ids) const {
    auto people = xcs::map(lookup, ids);
    auto managers = xcs::map([this](const auto& u) { return lookup(manager_id(u)); }, people);
    std::vector<decltype(join(people.front(), managers.front()))> lines;
    lines.reserve(people.size());
    for (std::size_t i = 0; i < people.size(); ++i) lines.push_back(join(people[i], managers[i]));
    return lines;
  }
};

/// The same, but it checks that every user has a manager before it looks the managers up: the
/// `if` reads a value computed from every user, so a jitted call of it runs staged. The read
/// waits for the first level of lookups; the second level is recorded after it.
template <class Lookup>
struct checked_manager_report {
  Lookup lookup;

  template <class Ids>
  auto operator()(const Ids& ids) const {
    auto people = xcs::map(lookup, ids);
    if (count_without_manager(people) != 0u) {
      throw std::invalid_argument("checked_manager_report: the ids include the top manager");
    }
    auto managers = xcs::map([this](const auto& u) { return lookup(manager_id(u)); }, people);
    std::vector<decltype(join(people.front(), managers.front()))> lines;
    lines.reserve(people.size());
    for (std::size_t i = 0; i < people.size(); ++i) lines.push_back(join(people[i], managers[i]));
    return lines;
  }
};

}  // namespace users
