// SPDX-License-Identifier: MIT
// The example's database: a SQLite file of users with managers, made once, then read through a
// pool of read-only connections that count every statement they run (sqlite3_trace_v2).
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

struct sqlite3;
struct sqlite3_stmt;

namespace users {

/// One row of the users table. `manager_id` is 0 for the one user without a manager.
struct user {
  std::int64_t id = 0;
  std::string name;
  std::int64_t manager_id = 0;
  bool operator==(const user&) const = default;
};

/// What SQLite refused (opening, preparing, stepping), with the file and SQLite's message; or a
/// database path the example cannot use.
class sqlite_error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// A lookup of an id that no row has. The message names the id.
class user_not_found : public std::runtime_error {
 public:
  explicit user_not_found(std::int64_t id);
  std::int64_t id() const noexcept { return id_; }

 private:
  std::int64_t id_;
};

/// How many users report to one manager: user 1 has no manager, user i > 1 reports to
/// (i - 2) / reports_per_manager + 1.
inline constexpr std::int64_t reports_per_manager = 8;
std::int64_t manager_of(std::int64_t id) noexcept;

/// Creates the database file `path` with a table users(id, name, manager_id) of users
/// 1..count (see `manager_of`), in one transaction. Throws sqlite_error, naming the path and
/// why, if `path`'s directory does not exist, `path` exists already, or SQLite fails.
void create_database(const std::filesystem::path& path, std::int64_t count);

/// `count` user ids spread evenly over 2..users, none of which shares a manager with another
/// when `users / count` exceeds `reports_per_manager`.
std::vector<std::int64_t> spread_ids(std::int64_t users, std::int64_t count);

/// A pool of read-only connections to one database file (SQLITE_OPEN_READONLY |
/// SQLITE_OPEN_NOMUTEX: each connection is used by one thread at a time, which the pool
/// ensures). A lookup takes an idle connection, or opens one when none is idle, so there are
/// as many as lookups ever ran at once. Every statement a connection starts is counted.
///
///     users::database db("users.db");
///     users::user u = db.find(42);                  // one query
///     auto some = db.find_all({42, 43, 44});        // one query: WHERE id IN (?, ?, ?)
///
/// Thread-safe.
class database {
 public:
  /// Opens one connection, which checks the file. Throws sqlite_error.
  explicit database(std::filesystem::path path);
  ~database();
  database(const database&) = delete;
  database& operator=(const database&) = delete;

  /// The user `id`: one SELECT ... WHERE id = ?. Throws user_not_found or sqlite_error.
  user find(std::int64_t id) const;
  /// The users of `ids`, in the same order (duplicates included): one SELECT ... WHERE id IN
  /// (...) with one parameter per id. Throws user_not_found for the first id in `ids` that no
  /// row has, or sqlite_error. An empty `ids` runs no query.
  std::vector<user> find_all(const std::vector<std::int64_t>& ids) const;

  /// Statements the connections started (SQLITE_TRACE_STMT), since the start or the last reset.
  std::uint64_t queries() const noexcept { return queries_.load(std::memory_order_relaxed); }
  void reset_queries() const noexcept { queries_.store(0, std::memory_order_relaxed); }
  /// Connections opened so far: the most lookups that ran at once.
  std::size_t connections() const;

  const std::filesystem::path& path() const noexcept { return path_; }

  class connection;

 private:
  class lease;
  lease acquire() const;
  void release(std::unique_ptr<connection> c) const;

  std::filesystem::path path_;
  // A counter only, read after the lookups it counts have returned: relaxed is enough.
  mutable std::atomic<std::uint64_t> queries_{0};
  mutable std::mutex mutex_;  // guards idle_ and opened_
  mutable std::vector<std::unique_ptr<connection>> idle_;
  mutable std::size_t opened_ = 0;
};

}  // namespace users
