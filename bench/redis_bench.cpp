// SPDX-License-Identifier: MIT
// What a Redis-backed rate limit costs (xcs::redis_rate_limiter, loopback, against a
// redis-server the benchmark starts) beside the in-process limiter: an acquire that finds its
// tokens (a direct call of a limited op), a jitted call of one limited op, and four threads
// sharing one limiter; the floor beside them: one blocking hiredis PING round trip from the
// calling thread. Target: a Redis acquire on loopback at most 150 µs.
//
// And what a result cache hit costs: xcs::redis_cache on loopback (one script round trip through
// the event thread) beside xcs::memory_cache and the uncached call, both as a direct call and
// as a jitted call of one op. Target: a Redis hit at most 150 µs.
#include <benchmark/benchmark.h>
#include <hiredis/hiredis.h>
#include <unistd.h>
#include <xcs/redis.hpp>
#include <xcs/xcs.hpp>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>

#include "local_redis.hpp"

namespace {

// So high that no acquire waits: what is measured is the asking, not the rate.
constexpr double kRate = 1e9;
constexpr double kBurst = 1e9;

xcs_test::local_redis& server() {
  static auto s = std::make_unique<xcs_test::local_redis>(std::filesystem::temp_directory_path() /
                                                          "xcs-redis-bench");
  return *s;
}

xcs::rate_limiter& redis_limiter() {
  static xcs::rate_limiter l = xcs::redis_rate_limiter(
      server().url(), "xcs-bench:" + std::to_string(::getpid()), kRate, kBurst);
  return l;
}

xcs::rate_limiter& local_limiter() {
  static xcs::rate_limiter l(kRate, kBurst);
  return l;
}

void direct_acquire(benchmark::State& state, xcs::rate_limiter& limiter) {
  auto call = xcs::op(
      "call", [](int v) { return v; }, xcs::rate_limit(limiter));
  benchmark::DoNotOptimize(call(1));
  for (auto _ : state) benchmark::DoNotOptimize(call(1));
  state.counters["target_us"] = benchmark::Counter(150, benchmark::Counter::kAvgThreads);
}

void jitted_call(benchmark::State& state, xcs::rate_limiter& limiter) {
  auto call = xcs::op(
      "call", [](int v) { return v; }, xcs::rate_limit(limiter));
  auto f = xcs::jit([&](auto x) { return call(x); });
  benchmark::DoNotOptimize(f(1));
  for (auto _ : state) benchmark::DoNotOptimize(f(1));
}

/// False, and the benchmark says why, without a redis-server.
bool have_server(benchmark::State& state) {
  if (!xcs_test::redis_server_path().empty()) return true;
  state.SkipWithError("redis-server is not installed");
  return false;
}

void BM_RedisLimiter_DirectAcquire(benchmark::State& state) {
  if (have_server(state)) direct_acquire(state, redis_limiter());
}
void BM_InProcessLimiter_DirectAcquire(benchmark::State& state) {
  direct_acquire(state, local_limiter());
}
void BM_RedisLimiter_JittedCall(benchmark::State& state) {
  if (have_server(state)) jitted_call(state, redis_limiter());
}
void BM_InProcessLimiter_JittedCall(benchmark::State& state) {
  jitted_call(state, local_limiter());
}

/// The floor: any request to the server costs this round trip (the limiter's adds two thread
/// hand-offs, to its event thread and back).
void BM_HiredisPing_RoundTrip(benchmark::State& state) {
  if (!have_server(state)) return;
  redisContext* c = redisConnect("127.0.0.1", server().port());
  if (!c || c->err) {
    state.SkipWithError("cannot connect to the server");
    if (c) redisFree(c);
    return;
  }
  for (auto _ : state) {
    void* reply = redisCommand(c, "PING");
    if (!reply) {
      state.SkipWithError(c->errstr);
      break;
    }
    freeReplyObject(reply);
  }
  redisFree(c);
}

// ---- the result cache ---------------------------------------------------------------------

/// A string op whose result is kept: every measured call is a hit (but for the uncached one).
std::string answer(const std::string& q) { return "the answer to " + q; }

xcs::redis_result_cache& redis_answers() {
  static xcs::redis_result_cache c = xcs::redis_cache(
      server().url(), "xcs-bench:" + std::to_string(::getpid()) + ":", std::chrono::hours(1));
  return c;
}

template <class Store>
void cached_direct(benchmark::State& state, const Store& store) {
  auto ask = xcs::op("ask", &answer, xcs::cache(store));
  const std::string q = "what is the question?";
  benchmark::DoNotOptimize(ask(q));  // the one miss
  for (auto _ : state) benchmark::DoNotOptimize(ask(q));
  state.counters["target_us"] = benchmark::Counter(150, benchmark::Counter::kAvgThreads);
}

template <class Store>
void cached_jitted(benchmark::State& state, const Store& store) {
  auto ask = xcs::op("ask", &answer, xcs::cache(store));
  auto f = xcs::jit([&](auto q) { return ask(q); });
  const std::string q = "what is the question?";
  benchmark::DoNotOptimize(f(q));
  for (auto _ : state) benchmark::DoNotOptimize(f(q));
}

void BM_RedisCache_DirectHit(benchmark::State& state) {
  if (have_server(state)) cached_direct(state, redis_answers());
}
void BM_MemoryCache_DirectHit(benchmark::State& state) {
  cached_direct(state, xcs::memory_cache(100, std::chrono::hours(1)));
}
void BM_Uncached_DirectCall(benchmark::State& state) {
  auto ask = xcs::op("ask", &answer);
  const std::string q = "what is the question?";
  for (auto _ : state) benchmark::DoNotOptimize(ask(q));
}
void BM_RedisCache_JittedHit(benchmark::State& state) {
  if (have_server(state)) cached_jitted(state, redis_answers());
}
void BM_MemoryCache_JittedHit(benchmark::State& state) {
  cached_jitted(state, xcs::memory_cache(100, std::chrono::hours(1)));
}
void BM_Uncached_JittedCall(benchmark::State& state) {
  auto ask = xcs::op("ask", &answer);
  auto f = xcs::jit([&](auto q) { return ask(q); });
  const std::string q = "what is the question?";
  for (auto _ : state) benchmark::DoNotOptimize(f(q));
}

BENCHMARK(BM_HiredisPing_RoundTrip)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RedisLimiter_DirectAcquire)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_InProcessLimiter_DirectAcquire)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RedisLimiter_JittedCall)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_InProcessLimiter_JittedCall)->UseRealTime()->Unit(benchmark::kMicrosecond);
// Four threads on one limiter: its waiters ask the server one at a time.
BENCHMARK(BM_RedisLimiter_DirectAcquire)->Threads(4)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_InProcessLimiter_DirectAcquire)
    ->Threads(4)
    ->UseRealTime()
    ->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RedisCache_DirectHit)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MemoryCache_DirectHit)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Uncached_DirectCall)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_RedisCache_JittedHit)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_MemoryCache_JittedHit)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK(BM_Uncached_JittedCall)->UseRealTime()->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
