// SPDX-License-Identifier: MIT
// The example's database and its body: the lookups, the three ways of running the body, and
// how many queries each sends (counted by SQLite's statement trace).
#include <gtest/gtest.h>
#include <stdlib.h>
#include <xcs/xcs.hpp>

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "report.hpp"
#include "users_db.hpp"

namespace {

namespace fs = std::filesystem;

constexpr std::int64_t kUsers = 100'000;
constexpr std::int64_t kLookups = 1'000;

// One database of kUsers users for the whole suite, in a directory of its own.
class SqliteLookupTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    std::string pattern = (fs::temp_directory_path() / "xcs-sqlite-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
    dir_ = new fs::path(pattern);
    users::create_database(*dir_ / "users.db", kUsers);
    db_ = new users::database(*dir_ / "users.db");
  }
  static void TearDownTestSuite() {
    delete db_;
    db_ = nullptr;
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
    dir_ = nullptr;
  }

  static const users::database& db() { return *db_; }
  static std::vector<std::int64_t> ids() { return users::spread_ids(kUsers, kLookups); }

  // The lines of the direct call with the plain op: what every other way must return.
  static std::vector<std::string> expected() {
    users::manager_report<decltype(users::plain_lookup(db()))> direct{users::plain_lookup(db())};
    return direct(ids());
  }

 private:
  static fs::path* dir_;
  static users::database* db_;
};
fs::path* SqliteLookupTest::dir_ = nullptr;
users::database* SqliteLookupTest::db_ = nullptr;

TEST_F(SqliteLookupTest, FindReadsOneRowInOneQuery) {
  db().reset_queries();
  users::user u = db().find(42);
  EXPECT_EQ(db().queries(), 1u);
  EXPECT_EQ(u.id, 42);
  EXPECT_EQ(u.manager_id, users::manager_of(42));
  EXPECT_NE(u.name.find("42"), std::string::npos) << u.name;
  EXPECT_EQ(db().find(1).manager_id, 0) << "the top manager has none";
}

TEST_F(SqliteLookupTest, FindAllKeepsOrderAndDuplicatesInOneQuery) {
  const std::vector<std::int64_t> ids = {9, 3, 77777, 3, 1};
  db().reset_queries();
  std::vector<users::user> found = db().find_all(ids);
  EXPECT_EQ(db().queries(), 1u);
  ASSERT_EQ(found.size(), ids.size());
  for (std::size_t i = 0; i < ids.size(); ++i) EXPECT_EQ(found[i], db().find(ids[i]));
  db().reset_queries();
  EXPECT_TRUE(db().find_all({}).empty());
  EXPECT_EQ(db().queries(), 0u);
}

TEST_F(SqliteLookupTest, AMissingIdIsNamed) {
  try {
    db().find(kUsers + 5);
    FAIL() << "no exception";
  } catch (const users::user_not_found& e) {
    EXPECT_EQ(e.id(), kUsers + 5);
    EXPECT_STREQ(e.what(), "no user with id 100005");
  }
  try {
    db().find_all({7, kUsers + 9, kUsers + 8});
    FAIL() << "no exception";
  } catch (const users::user_not_found& e) {
    EXPECT_EQ(e.id(), kUsers + 9) << "the first missing id, in the order asked";
  }
}

TEST_F(SqliteLookupTest, TheLookedUpUsersHaveDistinctManagers) {
  std::vector<std::int64_t> managers;
  for (std::int64_t id : ids()) managers.push_back(users::manager_of(id));
  std::sort(managers.begin(), managers.end());
  EXPECT_EQ(std::adjacent_find(managers.begin(), managers.end()), managers.end());
  EXPECT_EQ(ids().size(), static_cast<std::size_t>(kLookups));
}

TEST_F(SqliteLookupTest, DirectCallSendsTwoQueriesPerId) {
  db().reset_queries();
  std::vector<std::string> lines = expected();
  EXPECT_EQ(db().queries(), 2u * kLookups);
  ASSERT_EQ(lines.size(), static_cast<std::size_t>(kLookups));
  const users::user first = db().find(ids().front());
  EXPECT_EQ(lines.front(), users::join_line(first, db().find(first.manager_id)));
}

TEST_F(SqliteLookupTest, PlainJittedOpGivesTheSameLinesWithOneQueryPerCall) {
  users::manager_report<decltype(users::plain_lookup(db()))> body{users::plain_lookup(db())};
  auto jitted = xcs::jit(body);
  const std::vector<std::string> want = expected();
  for (int call = 0; call < 2; ++call) {  // the first traces, the second runs the cached plan
    db().reset_queries();
    EXPECT_EQ(jitted(ids()), want);
    EXPECT_EQ(db().queries(), 2u * kLookups);
  }
  EXPECT_EQ(jitted.stats().staged_calls, 0u);
  EXPECT_EQ(jitted.stats().plan_runs, 2u);
}

TEST_F(SqliteLookupTest, StagedBodyWithPlainOpGivesTheSameLines) {
  users::checked_manager_report<decltype(users::plain_lookup(db()))> body{
      users::plain_lookup(db())};
  auto jitted = xcs::jit(body);
  const std::vector<std::string> want = expected();
  for (int call = 0; call < 2; ++call) {
    db().reset_queries();
    EXPECT_EQ(jitted(ids()), want);
    EXPECT_EQ(db().queries(), 2u * kLookups);
  }
  EXPECT_EQ(jitted.stats().staged_calls, 2u) << jitted.stats();
}

// The lookup op's batches in the stats of a jitted function.
template <class Jitted>
std::uint64_t lookup_batches(const Jitted& jitted) {
  for (const xcs::op_stats& op : jitted.stats().ops) {
    if (op.name == "lookup") return op.batches;
  }
  return 0;
}

class SqliteBatchTest : public SqliteLookupTest,
                        public ::testing::WithParamInterface<std::size_t> {};

TEST_P(SqliteBatchTest, PlanSendsTwoQueriesPerBatchOfEachLevel) {
  const std::size_t max_batch = GetParam();
  users::manager_report<decltype(users::batched_lookup(db(), max_batch))> body{
      users::batched_lookup(db(), max_batch)};
  auto jitted = xcs::jit(body);
  const std::vector<std::string> want = expected();
  const std::uint64_t queries = users::batched_queries(kLookups, max_batch);
  for (int call = 1; call <= 2; ++call) {
    db().reset_queries();
    EXPECT_EQ(jitted(ids()), want);
    EXPECT_EQ(db().queries(), queries) << "call " << call << ", max_batch " << max_batch;
    EXPECT_EQ(lookup_batches(jitted), call * queries);
  }
  EXPECT_EQ(jitted.stats().staged_calls, 0u);
}

TEST_P(SqliteBatchTest, StagedBodySendsTheSameQueries) {
  const std::size_t max_batch = GetParam();
  users::checked_manager_report<decltype(users::batched_lookup(db(), max_batch))> body{
      users::batched_lookup(db(), max_batch)};
  auto jitted = xcs::jit(body);
  const std::vector<std::string> want = expected();
  for (int call = 1; call <= 2; ++call) {
    db().reset_queries();
    EXPECT_EQ(jitted(ids()), want);
    EXPECT_EQ(db().queries(), users::batched_queries(kLookups, max_batch)) << "call " << call;
  }
  EXPECT_EQ(jitted.stats().staged_calls, 2u) << jitted.stats();
}

INSTANTIATE_TEST_SUITE_P(MaxBatch, SqliteBatchTest, ::testing::Values(100, 64, 1000));

TEST_F(SqliteLookupTest, DirectCallOfTheBatchedOpSendsBatchesOfOne) {
  users::manager_report<decltype(users::batched_lookup(db(), 100))> body{
      users::batched_lookup(db(), 100)};
  const std::vector<std::string> want = expected();
  db().reset_queries();
  EXPECT_EQ(body(ids()), want);
  EXPECT_EQ(db().queries(), 2u * kLookups);
}

TEST_F(SqliteLookupTest, AMissingIdFailsTheBatchedCallAsTheDirectOne) {
  std::vector<std::int64_t> some = ids();
  some[5] = kUsers + 1;  // no such user
  users::manager_report<decltype(users::plain_lookup(db()))> direct{users::plain_lookup(db())};
  users::manager_report<decltype(users::batched_lookup(db(), 64))> body{
      users::batched_lookup(db(), 64)};
  auto jitted = xcs::jit(body);
  std::string direct_error, jitted_error;
  try {
    direct(some);
  } catch (const users::user_not_found& e) {
    direct_error = e.what();
  }
  try {
    jitted(some);
  } catch (const users::user_not_found& e) {
    jitted_error = e.what();
  }
  EXPECT_EQ(direct_error, "no user with id 100001");
  EXPECT_EQ(jitted_error, direct_error);
}

TEST(SqliteLookupDatabaseTest, AMissingDirectoryIsNamed) {
  const fs::path path = fs::temp_directory_path() / "xcs-no-such-dir-7f3a" / "users.db";
  try {
    users::create_database(path, 10);
    FAIL() << "no exception";
  } catch (const users::sqlite_error& e) {
    EXPECT_NE(std::string(e.what()).find("the directory " + path.parent_path().string() +
                                         " does not exist"),
              std::string::npos)
        << e.what();
  }
}

TEST(SqliteLookupDatabaseTest, AnExistingFileIsNotOverwritten) {
  std::string pattern = (fs::temp_directory_path() / "xcs-sqlite-test-XXXXXX").string();
  ASSERT_NE(::mkdtemp(pattern.data()), nullptr);
  const fs::path path = fs::path(pattern) / "users.db";
  std::ofstream(path) << "not a database";
  EXPECT_THROW(users::create_database(path, 10), users::sqlite_error);
  EXPECT_THROW(users::database{fs::path(pattern) / "absent.db"}, users::sqlite_error);
  fs::remove_all(pattern);
}

}  // namespace
