// SPDX-License-Identifier: MIT
// sqlite_lookup: 1,000 users, their managers and a join over a SQLite database of 100,000
// users, run three ways in one process: the direct call, a plain jitted op, and a batched op.
//
//   sqlite_lookup [--db PATH] [--users N] [--lookups N] [--max-batch N] [--repeat N]
#include <fmt/format.h>
#include <stdlib.h>
#include <xcs/xcs.hpp>

#include <charconv>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "report.hpp"
#include "users_db.hpp"

namespace {

namespace fs = std::filesystem;

struct options {
  std::optional<fs::path> db;  // default: users.db in a temporary directory of its own
  std::int64_t users = 100'000;
  std::int64_t lookups = 1'000;
  std::size_t max_batch = 100;
  int repeat = 5;
};

constexpr std::string_view usage = R"(usage: sqlite_lookup [options]
  --db PATH        the database file to create (its directory must exist, the file must not);
                   kept afterwards. Default: users.db in a new temporary directory, removed
                   at the end
  --users N        users in the database (default 100000)
  --lookups N      user ids the body looks up, with their managers (default 1000)
  --max-batch N    ids per query of the batched lookup (default 100)
  --repeat N       timed calls of each way; the best is reported (default 5)
)";

[[noreturn]] void fail_usage(std::string_view message) {
  fmt::print(stderr, "sqlite_lookup: {}\n{}", message, usage);
  std::exit(2);
}

template <class Int>
Int parse_int(std::string_view flag, std::string_view text, Int lowest) {
  Int value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < lowest) {
    fail_usage(fmt::format("{} expects an integer >= {}, not '{}'", flag, lowest, text));
  }
  return value;
}

options parse_options(int argc, char** argv) {
  options o;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) fail_usage(fmt::format("{} needs a value", arg));
      return argv[++i];
    };
    if (arg == "--db") {
      o.db = fs::path(value());
    } else if (arg == "--users") {
      o.users = parse_int(arg, value(), std::int64_t{2});
    } else if (arg == "--lookups") {
      o.lookups = parse_int(arg, value(), std::int64_t{1});
    } else if (arg == "--max-batch") {
      o.max_batch = parse_int(arg, value(), std::size_t{1});
    } else if (arg == "--repeat") {
      o.repeat = parse_int(arg, value(), 1);
    } else if (arg == "--help" || arg == "-h") {
      fmt::print("{}", usage);
      std::exit(0);
    } else {
      fail_usage(fmt::format("unknown argument '{}'", arg));
    }
  }
  if (o.lookups > o.users - 1) {
    fail_usage(fmt::format("--lookups {} exceeds the {} users that have a manager", o.lookups,
                           o.users - 1));
  }
  return o;
}

template <class Fn>
double millis(Fn&& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

// A directory of its own under the system's temporary directory, removed with this object.
class scratch_dir {
 public:
  scratch_dir() {
    std::string pattern = (fs::temp_directory_path() / "xcs-sqlite-XXXXXX").string();
    if (::mkdtemp(pattern.data()) == nullptr) {
      throw users::sqlite_error("sqlite_lookup: cannot make a temporary directory " + pattern);
    }
    path_ = pattern;
  }
  ~scratch_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const noexcept { return path_; }

 private:
  fs::path path_;
};

/// One way of running the body: its lines, its time and its queries per call.
struct way {
  std::string name;
  std::vector<std::string> lines;
  double first_ms = 0;  // the first call (for a jitted function: trace, compile, run)
  double best_ms = 0;   // the best of the repeated calls
  std::uint64_t queries = 0;
  bool steady = true;  // every call sent the same number of queries
};

// Calls `fn(ids)` 1 + repeat times, counting each call's queries.
template <class Fn>
way measure(std::string name, const Fn& fn, const std::vector<std::int64_t>& ids,
            const users::database& db, int repeat) {
  way w;
  w.name = std::move(name);
  db.reset_queries();
  w.first_ms = millis([&] { w.lines = fn(ids); });
  w.queries = db.queries();
  for (int r = 0; r < repeat; ++r) {
    db.reset_queries();
    std::vector<std::string> again;
    double ms = millis([&] { again = fn(ids); });
    w.best_ms = r == 0 ? ms : std::min(w.best_ms, ms);
    w.steady = w.steady && db.queries() == w.queries && again == w.lines;
  }
  return w;
}

void print_way(const way& w, const way& direct) {
  fmt::print("{:<28} {:8.2f} ms  {:6} queries  first call {:8.2f} ms  speedup {:5.2f} x{}\n",
             w.name, w.best_ms, w.queries, w.first_ms, direct.best_ms / w.best_ms,
             w.steady ? "" : "  (calls differed!)");
}

int run(const options& o, const fs::path& path) {
  double create_ms = millis([&] { users::create_database(path, o.users); });
  users::database db(path);
  const std::vector<std::int64_t> ids = users::spread_ids(o.users, o.lookups);
  fmt::print(
      "database: {} ({} users, made in {:.0f} ms); the body looks up {} users and {} "
      "managers\n\n",
      path.string(), o.users, create_ms, ids.size(), ids.size());

  users::manager_report<decltype(users::plain_lookup(db))> plain{users::plain_lookup(db)};
  std::vector<way> ways;
  ways.push_back(measure("direct call", plain, ids, db, o.repeat));
  ways.push_back(measure("jitted, plain xcs::op", xcs::jit(plain), ids, db, o.repeat));
  users::manager_report<decltype(users::batched_lookup(db, o.max_batch))> batched{
      users::batched_lookup(db, o.max_batch)};
  auto batched_jit = xcs::jit(batched);
  ways.push_back(measure(fmt::format("jitted, xcs::batch_op ({})", o.max_batch), batched_jit, ids,
                         db, o.repeat));
  const std::uint64_t want_queries = users::batched_queries(ids.size(), o.max_batch);

  bool same = true;
  for (const way& w : ways) {
    print_way(w, ways.front());
    same = same && w.steady && w.lines == ways.front().lines;
  }
  const bool counted = ways[2].queries == want_queries;
  double load[3] = {};
  const int loads = ::getloadavg(load, 3);
  fmt::print(
      "\nfirst line: {}\nsame results: {}; batched queries: {} (2 x ceil({} / {}) = {}); "
      "connections opened: {}; load average {:.2f}\n",
      ways.front().lines.front(), same ? "yes" : "NO", ways[2].queries, ids.size(), o.max_batch,
      want_queries, db.connections(), loads > 0 ? load[0] : -1.0);
  fmt::print("{}\n", batched_jit.stats());
  fmt::print(
      "summary: users={} lookups={} max_batch={} direct_ms={:.2f} direct_queries={} "
      "jitted_ms={:.2f} jitted_queries={} batched_ms={:.2f} batched_queries={} "
      "expected_batched_queries={} same={} load={:.2f}\n",
      o.users, ids.size(), o.max_batch, ways[0].best_ms, ways[0].queries, ways[1].best_ms,
      ways[1].queries, ways[2].best_ms, ways[2].queries, want_queries, same ? "yes" : "no",
      loads > 0 ? load[0] : -1.0);
  return same && counted ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  const options o = parse_options(argc, argv);
  try {
    if (o.db) return run(o, *o.db);
    scratch_dir dir;
    return run(o, dir.path() / "users.db");
  } catch (const std::exception& e) {
    fmt::print(stderr, "sqlite_lookup: {}\n", e.what());
    return 3;
  }
}
