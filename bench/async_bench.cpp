// SPDX-License-Identifier: MIT
// Async ops: thousands of 100 ms requests in flight from one call, completed by one timer
// thread, beside the blocking-op version (a lane thread per waiting op) and std::async; and
// the cost of an async op over a plain one on a cached plan.
#include <sys/resource.h>

#include <condition_variable>
#include <deque>
#include <filesystem>
#include <fstream>
#include <future>
#include <mutex>

#include "bench_support.hpp"

namespace {

using namespace xcs_bench;
using steady = std::chrono::steady_clock;

constexpr auto kWait = std::chrono::milliseconds(100);

/// The event loop of the benchmark: one thread that completes each request `kWait` after it
/// was started, in start order (every request waits as long).
class timer_thread {
 public:
  timer_thread() : thread_([this] { loop(); }) {}
  ~timer_thread() {
    {
      std::lock_guard lock(mutex_);
      stop_ = true;
    }
    cv_.notify_one();
    thread_.join();
  }
  void add(xcs::completion<int> done, int value) {
    bool first;
    {
      std::lock_guard lock(mutex_);
      first = due_.empty();
      due_.push_back({steady::now() + kWait, std::move(done), value});
    }
    if (first) cv_.notify_one();
  }

 private:
  struct request {
    steady::time_point due;
    xcs::completion<int> done;
    int value;
  };
  void loop() {
    std::vector<request> batch;
    std::unique_lock lock(mutex_);
    for (;;) {
      if (due_.empty()) {
        if (stop_) return;
        cv_.wait(lock);
        continue;
      }
      if (due_.front().due > steady::now()) {
        cv_.wait_until(lock, due_.front().due);
        continue;
      }
      while (!due_.empty() && due_.front().due <= steady::now()) {
        batch.push_back(std::move(due_.front()));
        due_.pop_front();
      }
      lock.unlock();
      for (auto& r : batch) r.done(r.value + 1);
      batch.clear();
      lock.lock();
    }
  }

  std::mutex mutex_;
  std::condition_variable cv_;
  std::deque<request> due_;
  bool stop_ = false;
  std::thread thread_;
};

/// Samples the process's thread count every few milliseconds while it lives.
class thread_sampler {
 public:
  thread_sampler()
      : thread_([this] {
          while (!stop_.load()) {
            peak_ = std::max(peak_.load(), process_threads());
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
          }
        }) {}
  ~thread_sampler() {
    stop_ = true;
    thread_.join();
  }
  int peak() const { return peak_.load(); }

 private:
  std::atomic<bool> stop_{false};
  std::atomic<int> peak_{0};
  std::thread thread_;
};

/// A body of `n` independent calls of `op` on its argument, returning all their results.
template <class Op>
auto independent(Op op, int n) {
  return [op, n](auto x) {
    std::vector<decltype(op(x))> out;
    out.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) out.push_back(op(x));
    return out;
  };
}

// ---- n requests of 100 ms in one call -----------------------------------------------------

/// What a benchmark of n requests reports: its time per call, the most threads the process
/// had beyond those before the first call, and its peak memory beyond its memory then. The
/// first call, which traces and compiles, is untimed but counts for threads and memory.
class request_figures {
 public:
  request_figures() : before_(process_threads()) {
    reset_peak_rss();
    rss0_ = rss_mib();
  }
  void set(benchmark::State& state, double ns, double target_ms) {
    state.counters["ms"] = ns / 1e6;
    if (target_ms > 0) state.counters["target_ms"] = target_ms;
    state.counters["threads_added"] = sampler_.peak() - before_ - 1;  // not the sampler
    state.counters["peak_rss_added_mib"] = peak_rss_mib() - rss0_;
    state.counters["requests"] = static_cast<double>(state.range(0));
  }

 private:
  int before_;
  double rss0_ = 0;
  thread_sampler sampler_;
};

/// Async ops completed by one timer thread.
void BM_Jit_AsyncOps(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  timer_thread timer;
  request_figures figures;
  auto request = xcs::async_op("request", [&timer](const int& x, xcs::completion<int> done) {
    timer.add(std::move(done), x);
  });
  auto f = xcs::jit(independent(request, n));
  benchmark::DoNotOptimize(f(1));
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  figures.set(state, ns, n <= 10'000 ? 150 : 0);
}

/// The same requests as a blocking op: each waits on a blocking-lane thread (at most 1024 at
/// once), so the call runs in waves.
void BM_Jit_BlockingOps(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  request_figures figures;
  auto request = xcs::op(
      "request",
      [](int x) {
        std::this_thread::sleep_for(kWait);
        return x + 1;
      },
      xcs::blocking);
  auto f = xcs::jit(independent(request, n));
  benchmark::DoNotOptimize(f(1));
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  figures.set(state, ns, 0);
}

/// std::async: a thread per request.
void BM_StdAsync_Requests(benchmark::State& state) {
  const int n = static_cast<int>(state.range(0));
  request_figures figures;
  double ns = run_loop(state, [&] {
    std::vector<std::future<int>> fs;
    fs.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      fs.push_back(std::async(std::launch::async, [] {
        std::this_thread::sleep_for(kWait);
        return 2;
      }));
    }
    for (auto& fu : fs) benchmark::DoNotOptimize(fu.get());
  });
  figures.set(state, ns, 0);
}

// ---- overhead on a cached plan ------------------------------------------------------------

constexpr int kFan = 64;

/// Direct call of the plain ops: the baseline of both jitted versions.
void BM_Serial_PlainFan(benchmark::State& state) {
  auto body = independent(xcs::op("plain", [](int x) { return x + 1; }), kFan);
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(body(1)); });
  report(state, "fan", ns, kFan, true);
}

void BM_Jit_PlainFan(benchmark::State& state) {
  auto f = xcs::jit(independent(xcs::op("plain", [](int x) { return x + 1; }), kFan));
  for (int i = 0; i < 10; ++i) benchmark::DoNotOptimize(f(1));
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  report(state, "fan", ns, kFan);
  serial_times()["jit_plain_fan"] = ns;
}

/// The same fan of async ops whose completion is called inside the function.
void BM_Jit_AsyncFanImmediate(benchmark::State& state) {
  auto op = xcs::async_op("now", [](const int& x, xcs::completion<int> done) { done(x + 1); });
  auto f = xcs::jit(independent(op, kFan));
  for (int i = 0; i < 10; ++i) benchmark::DoNotOptimize(f(1));
  double ns = run_loop(state, [&] { benchmark::DoNotOptimize(f(1)); });
  report(state, "fan", ns, kFan);
  auto it = serial_times().find("jit_plain_fan");
  if (it != serial_times().end()) {
    state.counters["extra_ns_per_op_vs_plain"] = (ns - it->second) / kFan;
    state.counters["target_extra_ns"] = 1000;
  }
}

BENCHMARK(BM_Jit_AsyncOps)->Arg(10'000)->UseRealTime()->Iterations(5);
BENCHMARK(BM_StdAsync_Requests)->Arg(10'000)->UseRealTime()->Iterations(2);
BENCHMARK(BM_Jit_BlockingOps)->Arg(10'000)->UseRealTime()->Iterations(2);
BENCHMARK(BM_Jit_AsyncOps)->Arg(100'000)->UseRealTime()->Iterations(3);
BENCHMARK(BM_Jit_BlockingOps)->Arg(100'000)->UseRealTime()->Iterations(1);
BENCHMARK(BM_Serial_PlainFan)->UseRealTime();
BENCHMARK(BM_Jit_PlainFan)->UseRealTime();
BENCHMARK(BM_Jit_AsyncFanImmediate)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
