// SPDX-License-Identifier: MIT
// xcs::redis_rate_limiter against a real redis-server that each test starts on a free loopback
// port: one budget for every process, failures that name the URL and never hang, recovery when
// the server comes back. The URL parser and SHA-1 are tested without a server. Bounds are
// generous: the machine has two cores shared with other work.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <xcs/redis.hpp>
#include <xcs/xcs.hpp>

#include <fcntl.h>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "address.hpp"
#include "local_redis.hpp"
#include "sha1.hpp"

namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;
using steady = std::chrono::steady_clock;
using testing::HasSubstr;
using xcs_test::local_redis;
using xcs_test::ms_since;
using xcs_test::resident_kb;

fs::path work_dir() { return fs::temp_directory_path() / "xcs-redis-test"; }

/// A key no other test (or earlier run) used.
std::string fresh_key(const std::string& name) { return xcs_test::unique_key(name); }

/// What `fn` throws, as xcs::error's message; fails the test if it throws nothing else.
template <class Fn>
std::string error_of(Fn&& fn) {
  try {
    fn();
  } catch (const xcs::error& e) {
    return e.what();
  }
  ADD_FAILURE() << "no xcs::error";
  return {};
}

// ---- no server needed ----------------------------------------------------------------------

TEST(RedisUrlTest, ParsesHostPortAndDatabase) {
  using xcs::detail::redis::parse_url;
  auto a = parse_url("redis://127.0.0.1:6380/2");
  EXPECT_EQ(a.host, "127.0.0.1");
  EXPECT_EQ(a.port, 6380);
  EXPECT_EQ(a.db, 2);
  auto b = parse_url("redis://cache.internal");
  EXPECT_EQ(b.host, "cache.internal");
  EXPECT_EQ(b.port, 6379);
  EXPECT_EQ(b.db, 0);
  auto c = parse_url("redis://[::1]:7000/");
  EXPECT_EQ(c.host, "::1");
  EXPECT_EQ(c.port, 7000);
  EXPECT_EQ(c.db, 0);
}

TEST(RedisUrlTest, MalformedUrlsAreErrorsThatNameThem) {
  for (const char* bad : {"http://127.0.0.1:6379", "redis://", "redis://:6379", "redis://h:",
                          "redis://h:0", "redis://h:65536", "redis://h:63x", "redis://h:1/db",
                          "redis://user:pw@h:1", "redis://[::1", "127.0.0.1:6379"}) {
    const std::string what = error_of([&] { (void)xcs::redis_rate_limiter(bad, "k", 10, 5); });
    EXPECT_THAT(what, HasSubstr(std::string("'") + bad + "'")) << bad;
  }
}

TEST(RedisUrlTest, BadRateBurstKeyOrTimeoutAreErrorsThatNameTheValue) {
  const std::string url = "redis://127.0.0.1:1";
  EXPECT_THAT(error_of([&] { (void)xcs::redis_rate_limiter(url, "k", 0, 5); }),
              HasSubstr("(got 0)"));
  EXPECT_THAT(error_of([&] { (void)xcs::redis_rate_limiter(url, "k", -3, 5); }),
              HasSubstr("(got -3)"));
  EXPECT_THAT(error_of([&] { (void)xcs::redis_rate_limiter(url, "k", 10, 0.5); }),
              HasSubstr("(got 0.5)"));
  EXPECT_THAT(error_of([&] { (void)xcs::redis_rate_limiter(url, "k", 1.0 / 0.0, 5); }),
              HasSubstr("(got inf)"));
  EXPECT_THAT(error_of([&] { (void)xcs::redis_rate_limiter(url, "", 10, 5); }), HasSubstr("key"));
  EXPECT_THAT(error_of([&] {
                (void)xcs::redis_rate_limiter(url, "k", 10, 5, xcs::redis_options{0ms, 100ms});
              }),
              HasSubstr("connect timeout"));
}

TEST(RedisSha1Test, MatchesTheStandardsVectors) {
  using xcs::detail::redis::sha1_hex;
  EXPECT_EQ(sha1_hex(""), "da39a3ee5e6b4b0d3255bfef95601890afd80709");
  EXPECT_EQ(sha1_hex("abc"), "a9993e364706816aba3e25717850c26c9cd0d89d");
  EXPECT_EQ(sha1_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"),
            "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
  EXPECT_EQ(sha1_hex(std::string(1'000'000, 'a')), "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
}

TEST(RedisDownTest, AMissingServerFailsCallsFastWithTheUrlAndMemoryStaysFlat) {
  // Nothing listens on this port: connecting is refused at once.
  const std::string url = fmt::format("redis://127.0.0.1:{}", xcs_test::pick_free_port());
  const auto t0 = steady::now();
  xcs::rate_limiter limiter = xcs::redis_rate_limiter(url, fresh_key("down"), 100, 10);
  EXPECT_LT(ms_since(t0), 50.0);  // lazy: no connection made

  auto limited = xcs::op(
      "limited", [](int v) { return v; }, xcs::rate_limit(limiter));
  auto free = xcs::op("free", [](int v) { return v + 1; });
  auto f = xcs::jit([&](auto x) { return limited(x) + free(x); });
  double slowest_ms = 0;
  auto fail_once = [&] {
    const auto start = steady::now();
    try {
      (void)f(1);
      ADD_FAILURE() << "no exception";
    } catch (const xcs::error& e) {
      EXPECT_THAT(e.what(), HasSubstr(url));
    }
    slowest_ms = std::max(slowest_ms, ms_since(start));
  };
  for (int i = 0; i < 1000; ++i) fail_once();
  EXPECT_THAT(error_of([&] { (void)limited(1); }), HasSubstr(url));  // a direct call
  const long before_kb = resident_kb();
  for (int i = 0; i < 10'000; ++i) fail_once();
  const long grown_kb = resident_kb() - before_kb;
  std::printf(
      "down Redis: slowest failing call %.2f ms; resident set grew %ld kB over 10,000 "
      "failing calls\n",
      slowest_ms, grown_kb);
  EXPECT_LT(slowest_ms, 100.0 + 200.0);  // the command timeout and slack for a loaded machine
#if !defined(XCS_SANITIZE_ADDRESS)       // ASan's quarantine keeps freed memory resident
  EXPECT_LT(grown_kb, 1024);
#endif
}

// ---- against a server ----------------------------------------------------------------------

TEST(RedisTest, JittedOpsStartAtTheRateAndShowTheirWaits) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  const std::string key = fresh_key("rate");
  xcs::rate_limiter limiter = xcs::redis_rate_limiter(server.url(), key, 50, 5);
  std::atomic<int> starts{0};
  auto call = xcs::op(
      "call",
      [&starts](int v) {
        ++starts;
        return v * 2;
      },
      xcs::rate_limit(limiter));
  auto f = xcs::jit([&](auto a) { return call(a) + call(a + 1) + call(a + 2) + call(a + 3); });
  const auto t0 = steady::now();
  std::vector<std::thread> callers;
  std::atomic<int> wrong{0};
  for (int t = 0; t < 4; ++t) {
    callers.emplace_back([&] {
      while (steady::now() - t0 < 1000ms) {
        if (f(1) != 20) ++wrong;
      }
    });
  }
  for (auto& t : callers) t.join();
  const double took_s = ms_since(t0) / 1000.0;
  EXPECT_EQ(wrong.load(), 0);
  EXPECT_LE(starts.load(), static_cast<int>(50 * took_s) + 5);
  EXPECT_GE(starts.load(), static_cast<int>(0.8 * 50 * 1.0));
  EXPECT_GT(f.stats().ops[0].rate_wait_ns, 0u);
  // The bucket is in Redis, and expires once it would be full again (5 tokens at 50/s: 0.1 s,
  // plus a second).
  const long ttl_ms = std::stol(server.command("PTTL " + key));
  EXPECT_GT(ttl_ms, 0);
  EXPECT_LE(ttl_ms, 1100 + 10);
  std::printf("one process, 50/s burst 5: %d starts in %.2f s\n", starts.load(), took_s);
}

TEST(RedisTest, LimitersOnOneKeyShareTheBucketAndWeightsTakeTokens) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  const std::string key = fresh_key("shared");
  // A slow refill, so that what is taken shows.
  auto a = xcs::redis_rate_limiter(server.url(), key, 0.5, 10);
  auto b = xcs::redis_rate_limiter(server.url(), key, 0.5, 10);
  auto weighted = xcs::op(
      "weighted", [](int v) { return v; }, xcs::rate_limit(a, [](int v) { return v * 1.0; }));
  auto f = xcs::jit([&](auto x) { return weighted(x); });
  EXPECT_EQ(f(6), 6);
  EXPECT_NEAR(b.available(), 4.0, 0.2);  // the other limiter sees the 6 taken
  EXPECT_EQ(weighted(3), 3);             // a direct call draws from the same bucket
  EXPECT_NEAR(a.available(), 1.0, 0.2);
  EXPECT_THROW(weighted(11), xcs::error);  // more than the burst
  EXPECT_EQ(a.bucket().waiting(), 0u);
}

TEST(RedisTest, ABlockedCallGivesUpAtItsDeadlineOrStop) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  auto limiter = xcs::redis_rate_limiter(server.url(), fresh_key("blocked"), 0.5, 1);
  xcs::detail::token_source& bucket = limiter.bucket();
  ASSERT_TRUE(bucket.acquire_blocking(1, steady::now() + 1s, {}));  // the one token
  auto t0 = steady::now();
  EXPECT_FALSE(bucket.acquire_blocking(1, t0 + 150ms, {}));  // the next is 2 s away
  EXPECT_GE(ms_since(t0), 140.0);
  EXPECT_LT(ms_since(t0), 150.0 + 200.0);
  std::stop_source stop;
  std::thread stopper([&] {
    std::this_thread::sleep_for(100ms);
    stop.request_stop();
  });
  t0 = steady::now();
  EXPECT_FALSE(bucket.acquire_blocking(1, steady::now() + 10s, stop.get_token()));
  stopper.join();
  EXPECT_LT(ms_since(t0), 100.0 + 200.0);
  EXPECT_EQ(bucket.waiting(), 0u);
}

TEST(RedisTest, AFlushedScriptIsSentAgain) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  auto limiter = xcs::redis_rate_limiter(server.url(), fresh_key("flush"), 1000, 10);
  auto call = xcs::op(
      "call", [](int v) { return v; }, xcs::rate_limit(limiter));
  EXPECT_EQ(call(1), 1);
  EXPECT_EQ(server.command("SCRIPT FLUSH"), "OK");
  EXPECT_EQ(call(2), 2);  // NOSCRIPT, then EVAL
  EXPECT_EQ(call(3), 3);  // EVALSHA again
}

TEST(RedisTest, ADatabaseInTheUrlIsSelected) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  const std::string key = fresh_key("db");
  auto limiter = xcs::redis_rate_limiter(server.url() + "/3", key, 1, 5);
  EXPECT_NEAR(limiter.available(), 5.0, 1e-6);
  auto call = xcs::op(
      "call", [](int v) { return v; }, xcs::rate_limit(limiter));
  EXPECT_EQ(call(1), 1);
  EXPECT_EQ(server.command("EXISTS " + key, 3), "1");
  EXPECT_EQ(server.command("EXISTS " + key), "0");
}

TEST(RedisTest, AChildAfterForkUsesAConnectionOfItsOwn) {
#if defined(__SANITIZE_THREAD__) || defined(XCS_SANITIZE_THREAD)
  GTEST_SKIP() << "TSan does not support threads in a child of a multithreaded process";
#endif
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  auto limiter = xcs::redis_rate_limiter(server.url(), fresh_key("fork"), 1000, 10);
  auto call = xcs::op(
      "call", [](int v) { return v + 1; }, xcs::rate_limit(limiter));
  auto f = xcs::jit([&](auto x) { return call(x) + call(x); });
  EXPECT_EQ(f(1), 4);  // the parent's connection and event thread exist
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {
    int code = 0;
    try {
      for (int i = 0; i < 5; ++i) {
        if (f(i) != 2 * i + 2 || call(i) != i + 1) code = 1;
      }
    } catch (...) {
      code = 2;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  EXPECT_EQ(f(2), 6);  // the parent's connection still works
}

/// One limit_helper process, its output in a file.
struct helper {
  pid_t pid = -1;
  fs::path output;
};

helper spawn_helper(const std::string& url, const std::string& key, double rate, double burst,
                    std::int64_t start_unix_ms, double seconds, int threads, bool local,
                    const fs::path& output) {
  std::vector<std::string> args{XCS_REDIS_LIMIT_HELPER,
                                url,
                                key,
                                fmt::format("{}", rate),
                                fmt::format("{}", burst),
                                std::to_string(start_unix_ms),
                                fmt::format("{}", seconds),
                                std::to_string(threads)};
  if (local) args.push_back("--local");
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  const std::string out = output.string();
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
    if (fd >= 0) ::dup2(fd, 1);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  return helper{pid, output};
}

/// The op starts a helper wrote, and those at or after `from_ms` into the window.
struct helper_starts {
  int total = 0;
  int after = 0;
  bool done = false;
};

helper_starts read_starts(const fs::path& output, long from_ms = 0) {
  helper_starts s;
  std::ifstream in(output);
  std::string word;
  long value = 0;
  while (in >> word >> value) {
    if (word == "s") {
      ++s.total;
      if (value >= from_ms) ++s.after;
    } else if (word == "done") {
      s.done = true;
    }
  }
  return s;
}

std::int64_t unix_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

/// Runs `processes` helpers for `seconds` from a common start; kills helper 0 with SIGKILL
/// `kill_after_ms` into the window (if >= 0). Returns every helper's starts.
std::vector<helper_starts> run_helpers(const std::string& url, const std::string& key, double rate,
                                       double burst, double seconds, int processes, bool local,
                                       long kill_after_ms = -1) {
  const fs::path dir = work_dir() / fmt::format("helpers-{}", ::getpid());
  fs::create_directories(dir);
  const std::int64_t start = unix_ms() + 500;  // time for every helper to start
  std::vector<helper> helpers;
  for (int p = 0; p < processes; ++p) {
    helpers.push_back(spawn_helper(url, key, rate, burst, start, seconds, 8, local,
                                   dir / fmt::format("{}-{}.out", key, p)));
  }
  if (kill_after_ms >= 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(start + kill_after_ms - unix_ms()));
    ::kill(helpers[0].pid, SIGKILL);
  }
  std::vector<helper_starts> out;
  for (std::size_t p = 0; p < helpers.size(); ++p) {
    int status = 0;
    ::waitpid(helpers[p].pid, &status, 0);
    const bool killed = kill_after_ms >= 0 && p == 0;
    if (!killed) {
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
          << "helper " << p << " ended with status " << status;
    }
    out.push_back(read_starts(helpers[p].output, kill_after_ms < 0 ? 0 : kill_after_ms));
    EXPECT_EQ(out.back().done, !killed) << "helper " << p;
  }
  return out;
}

int total_of(const std::vector<helper_starts>& starts) {
  int total = 0;
  for (const auto& s : starts) total += s.total;
  return total;
}

TEST(RedisTest, ProcessesShareOneBudgetWhereInProcessLimitersMultiplyIt) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  constexpr double kRate = 100, kBurst = 10, kSeconds = 2;
  constexpr int kProcesses = 4;
  const double budget = kRate * kSeconds + kBurst;  // 210

  const int shared = total_of(
      run_helpers(server.url(), fresh_key("shared"), kRate, kBurst, kSeconds, kProcesses, false));
  const int separate = total_of(
      run_helpers(server.url(), fresh_key("local"), kRate, kBurst, kSeconds, kProcesses, true));
  std::printf(
      "%d processes x 8 threads, %.0f/s burst %.0f, %.0f s: budget %.0f; Redis limiter: "
      "%d starts; in-process limiters: %d starts\n",
      kProcesses, kRate, kBurst, kSeconds, budget, shared, separate);
  RecordProperty("shared_starts", shared);
  RecordProperty("in_process_starts", separate);
  EXPECT_LE(shared, budget);
  EXPECT_GE(shared, 0.9 * budget);
  EXPECT_GE(separate, 0.9 * kProcesses * budget);  // each process had the whole budget
}

TEST(RedisTest, AProcessKilledMidRunDoesNotStopTheOthers) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  constexpr double kRate = 100, kBurst = 10, kSeconds = 2;
  const double budget = kRate * kSeconds + kBurst;
  const auto starts = run_helpers(server.url(), fresh_key("killed"), kRate, kBurst, kSeconds, 4,
                                  false, /*kill_after_ms=*/800);
  const int total = total_of(starts);
  int survivors_after_kill = 0;
  for (std::size_t p = 1; p < starts.size(); ++p) survivors_after_kill += starts[p].after;
  std::printf(
      "4 processes, one killed at 0.8 s: %d starts (budget %.0f); the killed one made "
      "%d; the others %d after the kill\n",
      total, budget, starts[0].total, survivors_after_kill);
  EXPECT_LE(total, budget);
  EXPECT_GE(total, 0.9 * budget);
  // After the kill, the three others took the whole rate: 1.2 s at 100/s.
  EXPECT_GE(survivors_after_kill, 0.9 * kRate * 1.2);
}

TEST(RedisTest, AServerThatStopsOrDiesFailsOpsWithItsUrlAndIsUsedAgainWhenBack) {
  XCS_NEED_REDIS_SERVER();
  local_redis server(work_dir());
  const std::string url = server.url();
  auto limiter = xcs::redis_rate_limiter(url, fresh_key("dies"), 1000, 10);
  auto call = xcs::op(
      "call", [](int v) { return v; }, xcs::rate_limit(limiter));
  auto f = xcs::jit([&](auto x) { return call(x) + call(x + 1); });
  EXPECT_EQ(f(1), 3);
  // A restart while the connection is idle is no failure: the next call connects again.
  server.restart();
  std::this_thread::sleep_for(50ms);  // the event thread sees the old connection close
  EXPECT_EQ(f(1), 3);

  // Hung: connected, but no reply. Each call fails by the command timeout (100 ms).
  auto slowest_failure_ms = [&](int calls) {
    double slowest = 0;
    for (int i = 0; i < calls; ++i) {
      const auto t0 = steady::now();
      EXPECT_THAT(error_of([&] { (void)f(1); }), HasSubstr(url));
      slowest = std::max(slowest, ms_since(t0));
    }
    return slowest;
  };
  server.signal(SIGSTOP);
  const double hung_ms = slowest_failure_ms(5);
  std::printf("the error: %s\n", error_of([&] { (void)f(1); }).c_str());
  EXPECT_THAT(error_of([&] { (void)call(1); }), HasSubstr(url));  // a direct call
  server.signal(SIGCONT);
  server.signal(SIGKILL);
  const double dead_ms = slowest_failure_ms(20);
  std::printf("Redis stopped (SIGSTOP): slowest failing call %.1f ms; killed: %.1f ms\n", hung_ms,
              dead_ms);
  EXPECT_LT(hung_ms, 100.0 + 150.0);
  EXPECT_LT(dead_ms, 100.0 + 150.0);

  server.restart();  // the same port
  const auto back = steady::now();
  bool works = false;
  while (!works && steady::now() - back < 5s) {
    try {
      works = f(1) == 3;
    } catch (const xcs::error&) {
      std::this_thread::sleep_for(20ms);
    }
  }
  std::printf("server back: the limiter works again after %.0f ms\n", ms_since(back));
  EXPECT_TRUE(works);
  EXPECT_EQ(call(5), 5);
}

}  // namespace
