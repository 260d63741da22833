// SPDX-License-Identifier: MIT
// Creating the users database, and the read-only connections and their statements.
#include "users_db.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <algorithm>
#include <array>
#include <optional>
#include <string_view>
#include <system_error>
#include <unordered_map>
#include <utility>

namespace users {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view select_one = "SELECT id, name, manager_id FROM users WHERE id = ?1";

// "SELECT ... WHERE id IN (?1, ?2, ..., ?n)".
std::string select_in(std::size_t n) {
  std::string sql = "SELECT id, name, manager_id FROM users WHERE id IN (";
  for (std::size_t i = 1; i <= n; ++i) sql += fmt::format("{}?{}", i == 1 ? "" : ", ", i);
  return sql + ")";
}

std::string why(sqlite3* db, const fs::path& path, std::string_view doing) {
  return fmt::format("sqlite: {} {}: {}", doing, path.string(),
                     db != nullptr ? sqlite3_errmsg(db) : "out of memory");
}

void exec(sqlite3* db, const fs::path& path, const char* sql) {
  if (sqlite3_exec(db, sql, nullptr, nullptr, nullptr) != SQLITE_OK) {
    throw sqlite_error(why(db, path, fmt::format("'{}' failed on", sql)));
  }
}

struct db_closer {
  void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct stmt_finalizer {
  void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using db_handle = std::unique_ptr<sqlite3, db_closer>;
using stmt_handle = std::unique_ptr<sqlite3_stmt, stmt_finalizer>;

stmt_handle prepare(sqlite3* db, const fs::path& path, std::string_view sql) {
  sqlite3_stmt* raw = nullptr;
  if (sqlite3_prepare_v3(db, sql.data(), static_cast<int>(sql.size()), SQLITE_PREPARE_PERSISTENT,
                         &raw, nullptr) != SQLITE_OK) {
    throw sqlite_error(why(db, path, "cannot prepare a statement on"));
  }
  return stmt_handle(raw);
}

// The names are made up from these; the id keeps them unique.
constexpr std::array<std::string_view, 16> first_names = {
    "Ada",   "Alan", "Barbara", "Bjarne", "Dennis",   "Donald",  "Edsger", "Frances",
    "Grace", "John", "Ken",     "Leslie", "Margaret", "Niklaus", "Radia",  "Tony"};
constexpr std::array<std::string_view, 16> last_names = {
    "Allen", "Backus",  "Cerf",   "Dijkstra", "Hamilton", "Hopper",  "Hoare",  "Kay",
    "Knuth", "Lamport", "Liskov", "Lovelace", "Perlman",  "Ritchie", "Turing", "Wirth"};

std::string name_of(std::int64_t id) {
  auto i = static_cast<std::size_t>(id);
  return fmt::format("{} {} {}", first_names[i % 16], last_names[(i / 16) % 16], id);
}

// Counts each statement a connection starts; `ctx` is the database's counter.
int count_statement(unsigned, void* ctx, void*, void*) {
  static_cast<std::atomic<std::uint64_t>*>(ctx)->fetch_add(1, std::memory_order_relaxed);
  return 0;
}

}  // namespace

user_not_found::user_not_found(std::int64_t id)
    : std::runtime_error(fmt::format("no user with id {}", id)), id_(id) {}

std::int64_t manager_of(std::int64_t id) noexcept {
  return id <= 1 ? 0 : (id - 2) / reports_per_manager + 1;
}

std::vector<std::int64_t> spread_ids(std::int64_t users, std::int64_t count) {
  std::vector<std::int64_t> ids;
  if (count <= 0 || users < 2) return ids;
  const std::int64_t stride = std::max<std::int64_t>(1, (users - 1) / count);
  for (std::int64_t k = 0; k < count; ++k) ids.push_back(2 + (k * stride) % (users - 1));
  return ids;
}

void create_database(const fs::path& path, std::int64_t count) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  if (!fs::is_directory(dir, ec)) {
    throw sqlite_error(fmt::format("sqlite: cannot create {}: the directory {} does not exist",
                                   path.string(), dir.string()));
  }
  if (fs::exists(path, ec)) {
    throw sqlite_error(
        fmt::format("sqlite: {} exists already; give a path to a new file", path.string()));
  }
  sqlite3* raw = nullptr;
  int rc =
      sqlite3_open_v2(path.c_str(), &raw,
                      SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nullptr);
  db_handle db(raw);
  if (rc != SQLITE_OK) throw sqlite_error(why(raw, path, "cannot create"));
  // A scratch file, made in one go: no journal, no fsync.
  exec(db.get(), path, "PRAGMA journal_mode = OFF");
  exec(db.get(), path, "PRAGMA synchronous = OFF");
  exec(db.get(), path,
       "CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT NOT NULL, "
       "manager_id INTEGER REFERENCES users(id))");
  exec(db.get(), path, "BEGIN");
  stmt_handle insert = prepare(db.get(), path, "INSERT INTO users VALUES (?1, ?2, ?3)");
  for (std::int64_t id = 1; id <= count; ++id) {
    const std::string name = name_of(id);
    sqlite3_bind_int64(insert.get(), 1, id);
    sqlite3_bind_text(insert.get(), 2, name.data(), static_cast<int>(name.size()),
                      SQLITE_TRANSIENT);
    if (id == 1) {
      sqlite3_bind_null(insert.get(), 3);
    } else {
      sqlite3_bind_int64(insert.get(), 3, manager_of(id));
    }
    if (sqlite3_step(insert.get()) != SQLITE_DONE) {
      throw sqlite_error(why(db.get(), path, "cannot insert into"));
    }
    sqlite3_reset(insert.get());
  }
  exec(db.get(), path, "COMMIT");
}

// One read-only connection with its statements: the single-row one, and one per IN-list size
// seen (a batch op sends at most two sizes: max_batch and the remainder).
class database::connection {
 public:
  connection(const fs::path& path, std::atomic<std::uint64_t>* queries) : path_(path) {
    sqlite3* raw = nullptr;
    int rc =
        sqlite3_open_v2(path.c_str(), &raw, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, nullptr);
    db_.reset(raw);
    if (rc != SQLITE_OK) throw sqlite_error(why(raw, path, "cannot open"));
    sqlite3_trace_v2(raw, SQLITE_TRACE_STMT, &count_statement, queries);
    one_ = prepare(raw, path, select_one);
  }

  user find(std::int64_t id) {
    sqlite3_bind_int64(one_.get(), 1, id);
    std::optional<user> found;
    step_all(one_.get(), [&](user u) { found = std::move(u); });
    if (!found) throw user_not_found(id);
    return std::move(*found);
  }

  std::vector<user> find_all(const std::vector<std::int64_t>& ids) {
    std::unique_ptr<sqlite3_stmt, stmt_finalizer>& stmt = in_by_size_[ids.size()];
    if (!stmt) stmt = prepare(db_.get(), path_, select_in(ids.size()));
    for (std::size_t i = 0; i < ids.size(); ++i) {
      sqlite3_bind_int64(stmt.get(), static_cast<int>(i + 1), ids[i]);
    }
    std::unordered_map<std::int64_t, user> by_id;
    step_all(stmt.get(), [&](user u) { by_id.emplace(u.id, std::move(u)); });
    std::vector<user> out;
    out.reserve(ids.size());
    for (std::int64_t id : ids) {
      auto at = by_id.find(id);
      if (at == by_id.end()) throw user_not_found(id);
      out.push_back(at->second);
    }
    return out;
  }

 private:
  // Runs `stmt` to its end, handing each row to `row`, then resets it.
  template <class Row>
  void step_all(sqlite3_stmt* stmt, Row&& row) {
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      const auto* name = reinterpret_cast<const char*>(sqlite3_column_text(stmt, 1));
      row(user{sqlite3_column_int64(stmt, 0), name != nullptr ? name : "",
               sqlite3_column_int64(stmt, 2)});
    }
    sqlite3_reset(stmt);
    sqlite3_clear_bindings(stmt);
    if (rc != SQLITE_DONE) throw sqlite_error(why(db_.get(), path_, "cannot read"));
  }

  fs::path path_;
  db_handle db_;
  stmt_handle one_;
  std::unordered_map<std::size_t, stmt_handle> in_by_size_;
};

// A connection taken from the pool, given back when the lookup ends (however it ends).
class database::lease {
 public:
  lease(const database& owner, std::unique_ptr<connection> c)
      : owner_(&owner), connection_(std::move(c)) {}
  lease(lease&&) = default;
  ~lease() {
    if (connection_) owner_->release(std::move(connection_));
  }
  connection* operator->() const noexcept { return connection_.get(); }

 private:
  const database* owner_;
  std::unique_ptr<connection> connection_;
};

database::database(fs::path path) : path_(std::move(path)) {
  release(std::make_unique<connection>(path_, &queries_));
  opened_ = 1;
}

database::~database() = default;

database::lease database::acquire() const {
  {
    std::lock_guard lock(mutex_);
    if (!idle_.empty()) {
      std::unique_ptr<connection> c = std::move(idle_.back());
      idle_.pop_back();
      return lease(*this, std::move(c));
    }
  }
  auto opened = std::make_unique<connection>(path_, &queries_);
  std::lock_guard lock(mutex_);
  ++opened_;
  return lease(*this, std::move(opened));
}

void database::release(std::unique_ptr<connection> c) const {
  std::lock_guard lock(mutex_);
  idle_.push_back(std::move(c));
}

std::size_t database::connections() const {
  std::lock_guard lock(mutex_);
  return opened_;
}

user database::find(std::int64_t id) const { return acquire()->find(id); }

std::vector<user> database::find_all(const std::vector<std::int64_t>& ids) const {
  if (ids.empty()) return {};
  return acquire()->find_all(ids);
}

}  // namespace users
