// SPDX-License-Identifier: MIT
// What a Redis-backed rate limit costs (xcs::redis_rate_limiter, loopback, against a
// redis-server the benchmark starts) beside the in-process limiter: an acquire that finds its
// tokens (a direct call of a limited op), a jitted call of one limited op, and four threads
// sharing one limiter; the floor beside them: one blocking hiredis PING round trip from the
// calling thread. Target: a Redis acquire on loopback at most 150 µs.
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

}  // namespace

BENCHMARK_MAIN();
