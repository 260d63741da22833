// SPDX-License-Identifier: MIT
// xcs::redis_cache against a real redis-server that each test starts on a free loopback port:
// hits, misses and ttl, exact keys, errors not cached, results shared by processes, one call
// for concurrent misses in threads and processes, a killed owner, and a server that dies.
// Bounds are generous: the machine has two cores shared with other work.
#include <fcntl.h>
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xcs/redis.hpp>
#include <xcs/xcs.hpp>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "local_redis.hpp"

namespace geo {
/// A user's type: cached through its ADL to_json / from_json.
struct point {
  int x = 0;
  int y = 0;
  friend bool operator==(const point&, const point&) = default;
};
void to_json(nlohmann::json& j, const point& p) { j = nlohmann::json{{"x", p.x}, {"y", p.y}}; }
void from_json(const nlohmann::json& j, point& p) {
  p.x = j.at("x").get<int>();
  p.y = j.at("y").get<int>();
}
}  // namespace geo

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using xcs_test::local_redis;
using xcs_test::ms_since;
using xcs_test::resident_kb;

fs::path work_dir() { return fs::temp_directory_path() / "xcs-redis-cache-test"; }

/// A prefix no other test (or earlier run) used.
std::string fresh_prefix(const std::string& name) { return xcs_test::unique_key(name) + ":"; }

/// A cache_helper process, its stdout in a file.
struct helper {
  pid_t pid = -1;
  fs::path output;

  /// Waits for it; true if it exited with 0.
  bool succeeded() const {
    int status = 0;
    if (::waitpid(pid, &status, 0) != pid) return false;
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
  }
  /// The calls of the op it reported.
  int calls() const {
    std::ifstream in(output);
    int n = 0;
    for (std::string line; std::getline(in, line);) n += line.rfind("c ", 0) == 0;
    return n;
  }
};

helper spawn_helper(std::vector<std::string> args, const std::string& name) {
  const fs::path dir = work_dir() / fmt::format("helpers-{}", ::getpid());
  fs::create_directories(dir);
  const std::string out = (dir / name).string();
  args.insert(args.begin(), XCS_REDIS_CACHE_HELPER);
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (fd >= 0) ::dup2(fd, 1);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return helper{pid, out};
}

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// An op `twice` cached in `store` that counts its calls in `calls`.
auto counted_twice(const xcs::redis_result_cache& store, std::atomic<int>& calls) {
  return xcs::op(
      "twice",
      [&calls](int x) {
        calls.fetch_add(1);
        return 2 * x;
      },
      xcs::cache(store));
}

/// The number of keys in the server's database 0.
int keys_in(const local_redis& server) { return std::stoi(server.command("DBSIZE")); }

// ---- no server needed ----------------------------------------------------------------------

TEST(RedisCacheDownTest, MakingOneChecksTheUrlAndTtlAndNeverWaitsForTheServer) {
  EXPECT_THROW((void)xcs::redis_cache("http://localhost:6379", "p:", 1s), xcs::error);
  EXPECT_THROW((void)xcs::redis_cache("redis://:6379", "p:", 1s), xcs::error);
  EXPECT_THROW((void)xcs::redis_cache("redis://127.0.0.1:6379", "p:", -1s), xcs::error);
  const std::string url = fmt::format("redis://127.0.0.1:{}", xcs_test::pick_free_port());
  const auto t0 = steady::now();
  auto store = xcs::redis_cache(url, "p:", 1s);
  EXPECT_LT(ms_since(t0), 50.0);
  EXPECT_EQ(store.bypassed(), 0u);
}

TEST(RedisCacheDownTest, ADownServerIsBypassedOpsRunAndMemoryStaysFlat) {
  const std::string url = fmt::format("redis://127.0.0.1:{}", xcs_test::pick_free_port());
  auto store = xcs::redis_cache(url, "p:", 0s);
  std::atomic<int> calls{0};
  auto twice = counted_twice(store, calls);
  auto f = xcs::jit([&](auto x) { return twice(x) + twice(x + 1); });
  double slowest_ms = 0;
  auto call_once = [&](int i) {
    const auto t0 = steady::now();
    EXPECT_EQ(f(i), 4 * i + 2);
    EXPECT_EQ(twice(i), 2 * i);
    slowest_ms = std::max(slowest_ms, ms_since(t0));
  };
  for (int i = 0; i < 500; ++i) call_once(i % 7);
  const long before_kb = resident_kb();
  for (int i = 0; i < 10'000; ++i) call_once(i % 7);
  const long grown_kb = resident_kb() - before_kb;
  EXPECT_EQ(calls.load(), 3 * 10'500);  // no in-process stand-in: every call runs the op
  EXPECT_EQ(store.bypassed(), 3u * 10'500u);
  std::printf("down Redis: slowest bypassed call %.2f ms; resident set grew %ld kB over 10,000\n",
              slowest_ms, grown_kb);
  EXPECT_LT(slowest_ms, 100.0 + 200.0);  // the connect timeout and slack for a loaded machine
#if !defined(XCS_SANITIZE_ADDRESS)
  EXPECT_LT(grown_kb, 1024);
#endif
}

// ---- against a server ----------------------------------------------------------------------

TEST(RedisCacheTest, AHitSkipsTheOpAndTheTtlEndsIt) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  auto store = xcs::redis_cache(server.url(), fresh_prefix("ttl"), 300ms);
  std::atomic<int> calls{0};
  auto twice = counted_twice(store, calls);
  auto f = xcs::jit([&](auto x) { return twice(x) + 1; });
  EXPECT_EQ(f(5), 11);
  EXPECT_EQ(f(5), 11);
  EXPECT_EQ(twice(5), 10);  // a direct call: the same key
  EXPECT_EQ(calls.load(), 1);
  for (const xcs::op_stats& s : f.stats().ops) {
    if (s.name != "twice") continue;
    EXPECT_EQ(s.cache_misses, 1u);  // the plan's: its first call
    EXPECT_EQ(s.cache_hits, 1u);
  }
  EXPECT_EQ(keys_in(server), 1);  // the value; the marker is gone
  std::this_thread::sleep_for(400ms);
  EXPECT_EQ(f(5), 11);
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(store.bypassed(), 0u);
}

TEST(RedisCacheTest, ATtlOfZeroNeverExpiresAndUserTypesGoThroughJson) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  auto store = xcs::redis_cache(server.url(), fresh_prefix("zero"), 0s);
  std::atomic<int> calls{0};
  auto mirror = xcs::op(
      "mirror",
      [&](const geo::point& p) {
        calls.fetch_add(1);
        return geo::point{p.y, p.x};
      },
      xcs::cache(store));
  EXPECT_EQ(mirror(geo::point{1, 2}), (geo::point{2, 1}));
  EXPECT_EQ(mirror(geo::point{1, 2}), (geo::point{2, 1}));
  EXPECT_EQ(calls.load(), 1);
  EXPECT_THAT(server.command("INFO keyspace"), testing::HasSubstr("keys=1,expires=0"));
}

TEST(RedisCacheTest, KeysAreExactAndCarryTheNameAndVersion) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  const std::string prefix = fresh_prefix("exact");
  auto store = xcs::redis_cache(server.url(), prefix, 0s);
  std::atomic<int> calls{0};
  auto join_v = [&](const char* version) {
    return xcs::op(
        "join",
        [&](const std::string& a, const std::string& b) {
          calls.fetch_add(1);
          return a + "|" + b;
        },
        xcs::cache(store), xcs::cache_version(version));
  };
  auto v1 = join_v("v1");
  auto f = xcs::jit([&](auto a, auto b) { return v1(a, b); });
  EXPECT_EQ(f(std::string("ab"), std::string("c")), "ab|c");
  EXPECT_EQ(f(std::string("a"), std::string("bc")), "a|bc");
  EXPECT_EQ(calls.load(), 2);
  EXPECT_EQ(v1(std::string("ab"), std::string("c")), "ab|c");
  EXPECT_EQ(calls.load(), 2);
  auto v2 = join_v("v2");  // a new version: older results are not used
  EXPECT_EQ(v2(std::string("ab"), std::string("c")), "ab|c");
  EXPECT_EQ(calls.load(), 3);
  // Another prefix is another cache.
  auto other = xcs::redis_cache(server.url(), prefix + "x:", 0s);
  auto v1x = xcs::op(
      "join",
      [&](const std::string& a, const std::string& b) {
        calls.fetch_add(1);
        return a + "|" + b;
      },
      xcs::cache(other), xcs::cache_version("v1"));
  EXPECT_EQ(v1x(std::string("ab"), std::string("c")), "ab|c");
  EXPECT_EQ(calls.load(), 4);
}

TEST(RedisCacheTest, ErrorsAreNotCachedAndTheirMarkerGoesAtOnce) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  auto store = xcs::redis_cache(server.url(), fresh_prefix("errors"), 0s);
  std::atomic<int> calls{0};
  auto flaky = xcs::op(
      "flaky",
      [&](int x) {
        if (calls.fetch_add(1) == 0) throw std::runtime_error("first call fails");
        return x + 1;
      },
      xcs::cache(store));
  auto f = xcs::jit([&](auto x) { return flaky(x) * 2; });
  EXPECT_THROW((void)f(1), std::runtime_error);
  // The failed owner's marker is deleted at once (the release is asynchronous: a moment).
  const auto t0 = steady::now();
  while (keys_in(server) != 0 && steady::now() - t0 < 1s) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(keys_in(server), 0);
  EXPECT_EQ(f(1), 4);
  EXPECT_EQ(f(1), 4);
  EXPECT_EQ(calls.load(), 2);
}

TEST(RedisCacheTest, ASecondProcessGetsEveryKeyTheFirstComputed) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  const std::string prefix = fresh_prefix("shared");
  helper first = spawn_helper({server.url(), prefix, "compute", "50"}, "first.out");
  ASSERT_TRUE(first.succeeded());
  EXPECT_EQ(first.calls(), 100);
  helper second = spawn_helper({server.url(), prefix, "compute", "50"}, "second.out");
  ASSERT_TRUE(second.succeeded());
  EXPECT_EQ(second.calls(), 0);
}

TEST(RedisCacheTest, ThreadsAndProcessesAskingForOneKeyMakeOneCall) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  const std::string prefix = fresh_prefix("flight");
  const std::int64_t start = unix_ms() + 700;  // time for every helper to start
  std::vector<helper> helpers;
  for (int p = 0; p < 4; ++p) {
    helpers.push_back(spawn_helper({server.url(), prefix, "flight", std::to_string(start), "8"},
                                   fmt::format("flight-{}.out", p)));
  }
  // And 8 threads of this process, with the helpers' op.
  auto store = xcs::redis_cache(server.url(), prefix, 1h);
  std::atomic<int> calls{0};
  auto slow = xcs::op(
      "slow",
      [&](long x) {
        calls.fetch_add(1);
        std::this_thread::sleep_for(300ms);
        return x + 1;
      },
      xcs::cache(store));
  auto f = xcs::jit([&](auto x) { return slow(x) * 2; });
  std::this_thread::sleep_for(std::chrono::milliseconds(start - unix_ms()));
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] { EXPECT_EQ(t % 2 ? f(41L) : slow(41L) * 2, 84); });
  }
  for (auto& t : threads) t.join();
  for (const helper& h : helpers) {
    EXPECT_TRUE(h.succeeded());
    calls += h.calls();
  }
  EXPECT_EQ(calls.load(), 1);
  EXPECT_EQ(store.bypassed(), 0u);
}

TEST(RedisCacheTest, AServerThatStopsAnsweringIsBypassedWithinTheCommandTimeout) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  auto store = xcs::redis_cache(server.url(), fresh_prefix("slow"), 0s);
  std::atomic<int> calls{0};
  auto twice = counted_twice(store, calls);
  auto f = xcs::jit([&](auto x) { return twice(x) + twice(x + 1); });
  EXPECT_EQ(f(1), 6);
  server.signal(SIGSTOP);  // connected, but no reply
  double slowest_ms = 0;
  for (int i = 0; i < 5; ++i) {
    const auto t0 = steady::now();
    EXPECT_EQ(f(1), 6);
    slowest_ms = std::max(slowest_ms, ms_since(t0));
  }
  server.signal(SIGCONT);
  std::printf("Redis stopped (SIGSTOP): slowest bypassed call %.1f ms\n", slowest_ms);
  EXPECT_GT(store.bypassed(), 0u);
  EXPECT_LT(slowest_ms, 100.0 + 150.0);  // the command timeout (100 ms) and slack
}

TEST(RedisCacheTest, AnOwnerKilledMidCallBlocksTheKeyOnlyUntilItsMarkerExpires) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  const std::string prefix = fresh_prefix("killed");
  helper owner = spawn_helper({server.url(), prefix, "own"}, "own.out");
  const auto t0 = steady::now();
  while (owner.calls() == 0 && steady::now() - t0 < 5s) std::this_thread::sleep_for(5ms);
  ASSERT_EQ(owner.calls(), 1);
  ::kill(owner.pid, SIGKILL);
  const auto killed = steady::now();
  EXPECT_FALSE(owner.succeeded());
  // The same op (name, timeout of 1 s: the marker lives 1 s) in this process.
  auto store = xcs::redis_cache(server.url(), prefix, 1h);
  std::atomic<int> calls{0};
  auto stuck = xcs::op(
      "stuck",
      [&](long x) {
        calls.fetch_add(1);
        return x;
      },
      xcs::cache(store), xcs::timeout(1s));
  EXPECT_EQ(stuck(7L), 7);
  const double waited_ms = ms_since(killed);
  std::printf("a killed owner's key was computed again %.0f ms after the kill\n", waited_ms);
  EXPECT_EQ(calls.load(), 1);
  EXPECT_LT(waited_ms, 1000.0 + 500.0);
  EXPECT_EQ(stuck(7L), 7);
  EXPECT_EQ(calls.load(), 1);
}

TEST(RedisCacheTest, AServerKilledMidRunIsBypassedAndUsedAgainWhenBack) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  auto store = xcs::redis_cache(server.url(), fresh_prefix("dies"), 0s);
  std::atomic<int> calls{0};
  auto twice = counted_twice(store, calls);
  auto f = xcs::jit([&](auto x) { return twice(x) + twice(x + 1); });
  std::atomic<bool> stop{false};
  std::atomic<bool> wrong{false};
  std::atomic<double> slowest_ms{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&, t] {
      for (int i = 0; !stop.load(); ++i) {
        const auto c0 = steady::now();
        const int x = (t * 1000 + i) % 50;
        if (f(x) != 4 * x + 2) wrong = true;
        const double ms = ms_since(c0);
        if (ms > slowest_ms.load()) slowest_ms = ms;
      }
    });
  }
  std::this_thread::sleep_for(300ms);
  server.signal(SIGKILL);
  std::this_thread::sleep_for(500ms);
  const std::uint64_t bypassed_while_down = store.bypassed();
  server.restart();
  std::this_thread::sleep_for(1500ms);  // back: within the connection's backoff (at most 1 s)
  const int calls_before = calls.load();
  const std::uint64_t bypassed_before = store.bypassed();
  std::this_thread::sleep_for(300ms);
  stop = true;
  for (auto& c : callers) c.join();
  std::printf("server killed mid-run: %llu bypassed calls, slowest call %.1f ms\n",
              static_cast<unsigned long long>(store.bypassed()), slowest_ms.load());
  EXPECT_FALSE(wrong.load());
  EXPECT_GT(bypassed_while_down, 0u);
  EXPECT_LT(slowest_ms.load(), 100.0 + 300.0);  // a command timeout at most, and slack
  // Used again: nothing bypassed, and the 51 keys (computed again once) are hits.
  EXPECT_EQ(store.bypassed(), bypassed_before);
  EXPECT_EQ(calls.load(), calls_before);
}

}  // namespace
