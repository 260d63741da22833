// SPDX-License-Identifier: MIT
// Deadlines, cancellation, fail fast, rate limits and retries: how soon a bounded call ends,
// what starts after a stop, how many ops a rate limit lets through, how retries are spaced,
// and what a process making many such calls holds. Each xcs figure (BM_Jit_*) sits beside the
// direct call (BM_Serial_*) and, where it fits, std::async (BM_StdAsync_*) from the same run.
//
//   build-bench/bench/policy_bench                              # everything, about 2 min
//   XCS_POLICY_CALLS=20000 build-bench/bench/policy_bench       # a shorter memory figure
//
// Times are manual (SetIterationTime): the time each figure is about (to the exception, from
// the stop to the return), in ms. Counters named target_* state the goal: target_ms for the
// time itself, target_<counter> for a counter. Ops "stuck for 10 s" wait on a gate with a 10 s
// timeout; each benchmark opens its gate at its end and waits for them, so that they neither
// pile up across benchmarks nor hold the process at exit.
#include <condition_variable>
#include <cstdlib>
#include <exception>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <vector>

#include "bench_support.hpp"

namespace {

using namespace std::chrono_literals;
using xcs_bench::now_ns;

constexpr std::int64_t kMs = 1'000'000;
constexpr auto kStuck = 10s;  // how long a stuck op would sit in user code

double to_ms(std::int64_t ns) { return static_cast<double>(ns) / 1e6; }

/// Threads of this process, from /proc/self/status ("Threads:").
int status_threads() {
  std::ifstream in("/proc/self/status");
  std::string key;
  while (in >> key) {
    if (key == "Threads:") {
      int n = 0;
      in >> n;
      return n;
    }
    in.ignore(1 << 20, '\n');
  }
  return 0;
}

/// Where ops stuck in user code wait: up to `kStuck`, ignoring stop, until the benchmark that
/// made them opens the gate at its end. Held by shared_ptr in the ops, since a call leaves
/// them behind.
class stuck_gate {
 public:
  void wait() {
    std::unique_lock lock(m_);
    ++inside_;
    cv_.wait_for(lock, kStuck, [&] { return open_; });
    --inside_;
    cv_.notify_all();
  }
  /// Lets every op out (and any later one straight through); returns when none is inside.
  void open_and_drain() {
    std::unique_lock lock(m_);
    open_ = true;
    cv_.notify_all();
    cv_.wait(lock, [&] { return inside_ == 0; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  int inside_ = 0;  // guarded by m_
  bool open_ = false;
};

/// A blocking op stuck in user code until `gate` opens (at most 10 s): it ignores its token.
auto stuck_op(const std::shared_ptr<stuck_gate>& gate) {
  return xcs::op(
      "stuck",
      [gate](int v) {
        gate->wait();
        return v;
      },
      xcs::blocking);
}

/// Makes one call that throws `E`, outside the timed loop: a first call traces and compiles.
template <class E, class Call>
void warm_up(Call&& call) {
  try {
    call();
  } catch (const E&) {
  }
}

/// Waits up to `d`, returning early when stop is requested on `stop` (a condition variable
/// wait on the token): an op that honours its stop token. True if it was stopped.
bool wait_or_stop(std::stop_token stop, std::chrono::nanoseconds d) {
  std::mutex m;
  std::condition_variable_any cv;
  std::unique_lock lock(m);
  cv.wait_for(lock, stop, d, [] { return false; });
  return stop.stop_requested();
}

/// Start times of op instances (ns, steady clock), in the order they started.
class start_log {
 public:
  void add(std::int64_t t) {
    std::lock_guard lock(m_);
    starts_.push_back(t);
  }
  std::vector<std::int64_t> take() {
    std::lock_guard lock(m_);
    return std::exchange(starts_, {});
  }

 private:
  std::mutex m_;
  std::vector<std::int64_t> starts_;
};

/// Min, mean and max of one figure over the iterations, in ms, as counters `<name>_min` etc.
class spread {
 public:
  void add(double ms) {
    min_ = n_ ? std::min(min_, ms) : ms;
    max_ = n_ ? std::max(max_, ms) : ms;
    sum_ += ms;
    ++n_;
  }
  double mean() const { return n_ ? sum_ / n_ : 0.0; }
  void report(benchmark::State& state, const std::string& name) const {
    state.counters[name + "_min"] = min_;
    state.counters[name + "_mean"] = mean();
    state.counters[name + "_max"] = max_;
  }

 private:
  double min_ = 0, max_ = 0, sum_ = 0;
  int n_ = 0;
};

// ---- 1. deadline: a call whose op is stuck for 10 s, with a 100 ms deadline ---------------

constexpr auto kDeadline = 100ms;
constexpr double kDeadlineTargetMs = 105.0;
constexpr double kStopCallbackTargetMs = 1.0;

/// Times `call` (which must throw `E`) per iteration as the benchmark's manual time; counts
/// iterations that ended otherwise in `wrong`.
template <class E, class Call>
void time_to_exception(benchmark::State& state, Call&& call, double target_ms) {
  spread took;
  int wrong = 0;
  for (auto _ : state) {
    const std::int64_t t0 = now_ns();
    try {
      call();
      ++wrong;
    } catch (const E&) {
    } catch (...) {
      ++wrong;
    }
    const std::int64_t ns = now_ns() - t0;
    state.SetIterationTime(static_cast<double>(ns) / 1e9);
    took.add(to_ms(ns));
  }
  took.report(state, "ms");
  state.counters["wrong"] = wrong;
  state.counters["target_ms"] = target_ms;
}

/// A blocking op that ignores stop, stuck for 10 s: the call must still end at its deadline.
void BM_Jit_DeadlineBlocking(benchmark::State& state) {
  auto gate = std::make_shared<stuck_gate>();
  auto stuck = stuck_op(gate);
  auto f = xcs::jit([stuck](auto a, auto b) { return stuck(a) + stuck(b); });
  auto bounded = f.with_deadline(kDeadline);
  warm_up<xcs::deadline_exceeded>([&] { bounded(1, 2); });
  time_to_exception<xcs::deadline_exceeded>(
      state, [&] { bounded(1, 2); }, kDeadlineTargetMs);
  state.counters["deadline_exceeded_calls"] =
      static_cast<double>(f.stats().deadline_exceeded_calls);
  gate->open_and_drain();
}

/// The direct call under the same deadline: a plain-typed body falls back and runs directly,
/// with the deadline checked at each op's start and end, so it ends when the first stuck op
/// returns (10 s).
void BM_Serial_DeadlineBlocking(benchmark::State& state) {
  auto gate = std::make_shared<stuck_gate>();
  auto stuck = stuck_op(gate);
  auto f = xcs::jit([stuck](int a, int b) { return stuck(a) + stuck(b); });
  auto bounded = f.with_deadline(kDeadline);
  time_to_exception<xcs::deadline_exceeded>(
      state, [&] { bounded(1, 2); }, kDeadlineTargetMs);
  // fallback_calls does not count a first call that threw, so ask for the reason instead.
  state.counters["fell_back"] = !f.stats().fallback_reason.empty();
  gate->open_and_drain();
}

/// The same body staged: it branches on the stuck op's result, so the read waits for it.
void BM_Jit_DeadlineStagedRead(benchmark::State& state) {
  auto gate = std::make_shared<stuck_gate>();
  auto stuck = stuck_op(gate);
  auto f = xcs::jit([stuck](auto a, auto b) {
    auto x = stuck(a);
    auto y = stuck(b);
    if (x > 0) return x + y;  // a read: the signature runs staged
    return y;
  });
  auto bounded = f.with_deadline(kDeadline);
  warm_up<xcs::deadline_exceeded>([&] { bounded(1, 2); });
  time_to_exception<xcs::deadline_exceeded>(
      state, [&] { bounded(1, 2); }, kDeadlineTargetMs);
  state.counters["staged_calls"] = static_cast<double>(f.stats().staged_calls);
  gate->open_and_drain();
}

/// std::async: the same two stuck ops as threads, and future::wait_until at the deadline. The
/// futures are set aside (their destructors would wait for the threads) until the gate opens.
void BM_StdAsync_DeadlineBlocking(benchmark::State& state) {
  auto gate = std::make_shared<stuck_gate>();
  std::vector<std::future<int>> set_aside;
  time_to_exception<std::runtime_error>(
      state,
      [&] {
        const auto deadline = std::chrono::steady_clock::now() + kDeadline;
        auto stuck = [gate](int v) {
          gate->wait();
          return v;
        };
        auto a = std::async(std::launch::async, stuck, 1);
        auto b = std::async(std::launch::async, stuck, 2);
        const bool late = a.wait_until(deadline) == std::future_status::timeout ||
                          b.wait_until(deadline) == std::future_status::timeout;
        set_aside.push_back(std::move(a));
        set_aside.push_back(std::move(b));
        if (late) throw std::runtime_error("deadline");
      },
      kDeadlineTargetMs);
  gate->open_and_drain();
  set_aside.clear();
}

/// When stop callbacks ran, against the deadline of the call that registered them.
struct callback_times {
  std::mutex m;
  std::vector<std::int64_t> ran;  // guarded by m
  void add() {
    std::int64_t t = now_ns();
    std::lock_guard lock(m);
    ran.push_back(t);
  }
  /// The latest callback's delay after `deadline_ns`, in ms; -1 if none ran.
  double latest_delay_ms(std::int64_t deadline_ns) {
    std::lock_guard lock(m);
    if (ran.empty()) return -1;
    std::int64_t last = *std::max_element(ran.begin(), ran.end());
    ran.clear();
    return to_ms(last - deadline_ns);
  }
};

/// An async op whose work never completes on its own (its completion is held for 10 s) and
/// registers a stop callback that fails it: the call ends at the deadline, and the callback
/// runs (on the thread that requests stop) right at it.
void BM_Jit_DeadlineAsyncOp(benchmark::State& state) {
  struct pending {
    std::mutex m;
    std::vector<std::unique_ptr<std::stop_callback<std::function<void()>>>> callbacks;
    callback_times times;
  };
  auto p = std::make_shared<pending>();
  auto hang = xcs::async_op("hang", [p](int, xcs::completion<int> done) {
    auto token = done.stop_token();
    auto held = std::make_shared<xcs::completion<int>>(std::move(done));
    std::lock_guard lock(p->m);
    p->callbacks.push_back(std::make_unique<std::stop_callback<std::function<void()>>>(
        token, std::function<void()>([p, held] {
          p->times.add();
          held->fail(std::make_exception_ptr(std::runtime_error("aborted")));
        })));
  });
  auto f = xcs::jit([hang](auto a, auto b) { return hang(a) + hang(b); });
  auto bounded = f.with_deadline(kDeadline);
  auto clear = [&] {
    std::lock_guard lock(p->m);
    p->callbacks.clear();
  };
  warm_up<xcs::deadline_exceeded>([&] { bounded(1, 2); });
  clear();
  (void)p->times.latest_delay_ms(0);
  spread took, delay;
  int wrong = 0, no_callback = 0;
  for (auto _ : state) {
    const std::int64_t t0 = now_ns();
    try {
      bounded(1, 2);
      ++wrong;
    } catch (const xcs::deadline_exceeded&) {
    } catch (...) {
      ++wrong;
    }
    const std::int64_t ns = now_ns() - t0;
    state.SetIterationTime(static_cast<double>(ns) / 1e9);
    took.add(to_ms(ns));
    // t0 is taken just before the call reads the clock for its deadline: the delay is an
    // upper bound (by the call's entry, well under a microsecond).
    const double d = p->times.latest_delay_ms(t0 + kDeadline / 1ns);
    if (d < 0) {
      ++no_callback;
    } else {
      delay.add(d);
    }
    clear();
  }
  took.report(state, "ms");
  delay.report(state, "callback_delay_ms");
  state.counters["no_callback"] = no_callback;
  state.counters["wrong"] = wrong;
  state.counters["target_ms"] = kDeadlineTargetMs;
  state.counters["target_callback_delay_ms_max"] = kStopCallbackTargetMs;
}

/// std::async with a hand-made deadline: the work waits on a condition variable with a stop
/// token; the caller waits for the future until the deadline, then requests stop, which runs
/// the work's stop callback on the caller's thread.
void BM_StdAsync_DeadlineStopCallback(benchmark::State& state) {
  spread took, delay;
  int wrong = 0;
  for (auto _ : state) {
    const std::int64_t t0 = now_ns();
    const auto deadline = std::chrono::steady_clock::now() + kDeadline;
    std::stop_source source;
    callback_times times;
    std::stop_callback<std::function<void()>> callback(source.get_token(), [&] { times.add(); });
    auto work = [token = source.get_token()](int v) {
      wait_or_stop(token, kStuck);
      return v;
    };
    auto a = std::async(std::launch::async, work, 1);
    auto b = std::async(std::launch::async, work, 2);
    const bool late = a.wait_until(deadline) == std::future_status::timeout ||
                      b.wait_until(deadline) == std::future_status::timeout;
    const std::int64_t ns = now_ns() - t0;
    source.request_stop();
    wrong += !late;
    state.SetIterationTime(static_cast<double>(ns) / 1e9);
    took.add(to_ms(ns));
    delay.add(times.latest_delay_ms(t0 + kDeadline / 1ns));
  }
  took.report(state, "ms");
  delay.report(state, "callback_delay_ms");
  state.counters["wrong"] = wrong;
  state.counters["target_ms"] = kDeadlineTargetMs;
  state.counters["target_callback_delay_ms_max"] = kStopCallbackTargetMs;
}

// ---- 2. cancellation: stop requested from another thread mid-call -------------------------

constexpr int kChain = 30;               // steps per chain, two chains
constexpr auto kStep = 10ms;             // each step's wait
constexpr auto kStopAt = 55ms;           // stop requested this long after the call starts
constexpr double kCancelTargetMs = 5.0;  // the call returns within this of the stop

/// A stop requested from another thread `kStopAt` after `t0`: when it was requested and when
/// request_stop() returned.
struct stopper {
  std::stop_source source;
  std::int64_t requested = 0, returned = 0;
  std::thread thread;
  explicit stopper(std::int64_t t0)
      : thread([this, t0] {
          std::this_thread::sleep_for(std::chrono::nanoseconds(t0 + kStopAt / 1ns - now_ns()));
          requested = now_ns();
          source.request_stop();
          returned = now_ns();
        }) {}
  ~stopper() { join(); }
  void join() {
    if (thread.joinable()) thread.join();
  }
};

/// Calls `call(token)` once per iteration, stop being requested on `token` from another thread
/// 55 ms in; `call` must then throw `E`. Reports the time from the stop to the return (manual
/// time) and the op starts in `log` after request_stop() returned (and during it).
template <class E, class Call>
void stopped_calls(benchmark::State& state, start_log& log, Call&& call) {
  spread took;
  int after = 0, during = 0, wrong = 0, calls = 0, starts = 0;
  for (auto _ : state) {
    stopper s(now_ns());
    try {
      call(s.source.get_token());
      ++wrong;
    } catch (const E&) {
    } catch (...) {
      ++wrong;
    }
    const std::int64_t returned = now_ns();
    std::this_thread::sleep_for(20ms);  // an op started late would show in the log by now
    s.join();
    const std::int64_t ns = returned - s.requested;
    state.SetIterationTime(static_cast<double>(std::max<std::int64_t>(ns, 0)) / 1e9);
    took.add(to_ms(ns));
    for (std::int64_t t : log.take()) {
      after += t > s.returned;
      during += t > s.requested && t <= s.returned;
      ++starts;
    }
    ++calls;
  }
  took.report(state, "stop_to_return_ms");
  state.counters["starts_after_stop"] = after;
  state.counters["starts_during_request_stop"] = during;
  state.counters["starts_per_call"] = calls ? static_cast<double>(starts) / calls : 0;
  state.counters["wrong"] = wrong;
  state.counters["target_ms"] = kCancelTargetMs;
  state.counters["target_starts_after_stop"] = 0;
}

/// Two chains of 30 stop-aware 10 ms steps; stop is requested 55 ms in, from another thread.
void BM_Jit_Cancel(benchmark::State& state) {
  auto log = std::make_shared<start_log>();
  auto step = xcs::op(
      "step",
      [log](int v, std::stop_token stop) {
        log->add(now_ns());
        wait_or_stop(stop, kStep);
        return v + 1;
      },
      xcs::blocking);
  auto f = xcs::jit([step](auto a) {
    auto x = step(a);
    auto y = step(a + 1);
    for (int i = 1; i < kChain; ++i) {
      x = step(x);
      y = step(y);
    }
    return x + y;
  });
  {
    stopper warm(now_ns());  // one call to trace and compile, stopped as the timed ones are
    warm_up<xcs::cancelled>([&] { f.with_stop_token(warm.source.get_token())(1); });
  }
  std::this_thread::sleep_for(20ms);
  log->take();
  stopped_calls<xcs::cancelled>(state, *log,
                                [&](std::stop_token stop) { f.with_stop_token(stop)(1); });
  state.counters["cancelled_calls"] = static_cast<double>(f.stats().cancelled_calls);
}

struct cancelled_by_hand : std::runtime_error {
  cancelled_by_hand() : std::runtime_error("cancelled") {}
};

/// One chain written by hand: each step checks the token before it starts and waits on it.
int hand_chain(int v, const std::stop_token& stop, start_log& log) {
  for (int i = 0; i < kChain; ++i) {
    if (stop.stop_requested()) throw cancelled_by_hand();
    log.add(now_ns());
    wait_or_stop(stop, kStep);
    ++v;
  }
  if (stop.stop_requested()) throw cancelled_by_hand();
  return v;
}

/// The direct call: the two chains one after the other, each step checking the token.
void BM_Serial_Cancel(benchmark::State& state) {
  start_log log;
  stopped_calls<cancelled_by_hand>(state, log, [&](const std::stop_token& stop) {
    benchmark::DoNotOptimize(hand_chain(1, stop, log) + hand_chain(2, stop, log));
  });
}

/// std::async: each chain on its own thread; the call returns once both futures are done.
void BM_StdAsync_Cancel(benchmark::State& state) {
  start_log log;
  stopped_calls<cancelled_by_hand>(state, log, [&](const std::stop_token& stop) {
    auto a = std::async(std::launch::async, [&] { return hand_chain(1, stop, log); });
    auto b = std::async(std::launch::async, [&] { return hand_chain(2, stop, log); });
    b.wait();  // a.get() may throw: b's destructor would wait for it anyway
    benchmark::DoNotOptimize(a.get() + b.get());
  });
}

// ---- 3. fail fast: op #0 of 6 throws after 10 ms, the others would wait 200 ms -------------

constexpr int kFailFastOps = 6;
constexpr auto kThrowAfter = 10ms;
constexpr auto kSiblingWait = 200ms;
constexpr double kFailFastTargetMs = 15.0;

struct op_zero_failed : std::runtime_error {
  op_zero_failed() : std::runtime_error("op #0 failed") {}
};

/// Op i of the six: #0 throws after 10 ms; the others wait 200 ms unless asked to stop.
int fail_fast_work(int i, const std::stop_token& stop) {
  if (i == 0) {
    std::this_thread::sleep_for(kThrowAfter);
    throw op_zero_failed();
  }
  wait_or_stop(stop, kSiblingWait);
  return i;
}

auto six_ops = [](const auto& op) {
  return [op](auto a) {
    std::vector<decltype(op(a))> r;
    for (int i = 0; i < kFailFastOps; ++i) r.push_back(op(a + i));
    return r;
  };
};

/// Where op #0 started among the six (0-based), from the log of one call's starts.
struct start_order {
  std::mutex m;
  std::vector<int> order;  // guarded by m
  void add(int i) {
    std::lock_guard lock(m);
    order.push_back(i);
  }
  int position_of_zero() {
    std::lock_guard lock(m);
    auto it = std::find(order.begin(), order.end(), 0);
    int pos = it == order.end() ? -1 : static_cast<int>(it - order.begin());
    order.clear();
    return pos;
  }
};

/// The six ops as one blocking op with `options`, jitted; also reports where op #0 started.
template <class... Options>
void fail_fast(benchmark::State& state, Options... options) {
  auto order = std::make_shared<start_order>();
  auto op = xcs::op(
      "op",
      [order](int i, std::stop_token stop) {
        order->add(i);
        return fail_fast_work(i, stop);
      },
      xcs::blocking, options...);
  auto f = xcs::jit(six_ops(op));
  warm_up<op_zero_failed>([&] { f(0); });
  std::this_thread::sleep_for(50ms);
  order->position_of_zero();
  int worst = 0, first_pair = 0, not_started = 0, iterations = 0;
  time_to_exception<op_zero_failed>(
      state,
      [&] {
        try {
          f(0);
        } catch (...) {
          const int pos = order->position_of_zero();
          worst = std::max(worst, pos);
          first_pair += pos == 0 || pos == 1;
          not_started += pos < 0;
          ++iterations;
          throw;
        }
      },
      kFailFastTargetMs);
  state.counters["op0_position_max"] = worst;
  state.counters["op0_in_first_pair"] =
      iterations ? static_cast<double>(first_pair) / iterations : 0;
  state.counters["op0_not_started"] = not_started;
}

/// Six independent blocking ops, no bound on concurrency: all six start at once.
void BM_Jit_FailFast(benchmark::State& state) { fail_fast(state); }

/// The same with xcs::max_concurrency(2): op #0 must start in the first pair, or its failure
/// would wait for a 200 ms sibling.
void BM_Jit_FailFastMaxConcurrency2(benchmark::State& state) {
  fail_fast(state, xcs::max_concurrency(2));
}

/// The direct call: op #0 runs first and throws at 10 ms.
void BM_Serial_FailFast(benchmark::State& state) {
  auto op = xcs::op("op", [](int i) { return fail_fast_work(i, {}); });
  auto body = six_ops(op);
  time_to_exception<op_zero_failed>(
      state, [&] { body(0); }, kFailFastTargetMs);
}

/// std::async: six threads sharing a stop source; the caller gets op #0's future first, then
/// requests stop and waits for the others (their futures' destructors).
void BM_StdAsync_FailFast(benchmark::State& state) {
  time_to_exception<op_zero_failed>(
      state,
      [&] {
        std::stop_source source;
        std::vector<std::future<int>> fs;
        for (int i = 0; i < kFailFastOps; ++i) {
          fs.push_back(std::async(std::launch::async, fail_fast_work, i, source.get_token()));
        }
        try {
          for (auto& fu : fs) benchmark::DoNotOptimize(fu.get());
        } catch (...) {
          source.request_stop();
          fs.clear();
          throw;
        }
      },
      kFailFastTargetMs);
}

// ---- 4. rate limit: 16 threads, 4 limited ops per call, 5 s --------------------------------

constexpr int kCallers = 16;
constexpr double kRate = 50, kBurst = 5;
constexpr auto kRateWindow = 5s;

/// Runs `call` in a loop on 16 threads for 5 s against a fresh rate_limiter(50, 5), counting
/// op starts (the ops log them); samples the thread count meanwhile.
template <class MakeCall>
void rate_limited(benchmark::State& state, MakeCall make_call) {
  for (auto _ : state) {
    xcs::rate_limiter limiter(kRate, kBurst);
    auto log = std::make_shared<start_log>();
    auto call = make_call(limiter, log);
    call();                              // warm: traces and compiles; takes 4 of the 5 tokens
    std::this_thread::sleep_for(200ms);  // the bucket refills: full at t0
    log->take();
    const int threads_before = status_threads();
    const std::int64_t t0 = now_ns();
    const std::int64_t window_end = t0 + kRateWindow / 1ns;
    std::atomic<long> calls{0};
    std::vector<std::thread> callers;
    for (int t = 0; t < kCallers; ++t) {
      callers.emplace_back([&] {
        while (now_ns() < window_end) {
          call();
          calls.fetch_add(1, std::memory_order_relaxed);
        }
      });
    }
    int threads_start = 0, threads_end = 0, threads_max = 0;
    for (std::int64_t sample = t0 + 250 * kMs; sample < window_end; sample += 250 * kMs) {
      std::this_thread::sleep_for(std::chrono::nanoseconds(sample - now_ns()));
      const int n = status_threads();
      if (!threads_start) threads_start = n;
      threads_end = n;  // the last sample, at 4.75 s: every caller is still waiting
      threads_max = std::max(threads_max, n);
    }
    for (auto& c : callers) c.join();
    const std::int64_t elapsed = now_ns() - t0;
    const auto starts = log->take();
    const auto in_window = std::count_if(starts.begin(), starts.end(),
                                         [&](std::int64_t t) { return t <= window_end; });
    const double bound = kRate * std::chrono::duration<double>(kRateWindow).count() + kBurst;
    state.counters["starts_5s"] = static_cast<double>(in_window);
    state.counters["bound_5s"] = bound;
    state.counters["starts_over_bound"] = static_cast<double>(in_window) / bound;
    state.counters["target_starts_over_bound"] = 1.0;
    state.counters["starts_total"] = static_cast<double>(starts.size());
    state.counters["elapsed_s"] = static_cast<double>(elapsed) / 1e9;
    state.counters["bound_total"] = kRate * static_cast<double>(elapsed) / 1e9 + kBurst;
    state.counters["calls"] = static_cast<double>(calls.load());
    state.counters["threads_before"] = threads_before;
    state.counters["threads_start"] = threads_start;
    state.counters["threads_end"] = threads_end;
    state.counters["threads_max"] = threads_max;
  }
}

auto limited_op(const xcs::rate_limiter& limiter, const std::shared_ptr<start_log>& log) {
  return xcs::op(
      "limited",
      [log](int v) {
        log->add(now_ns());
        return v;
      },
      xcs::rate_limit(limiter));
}

auto four_limited = [](const auto& op) {
  return [op](auto a) { return op(a) + op(a + 1) + op(a + 2) + op(a + 3); };
};

void BM_Jit_RateLimit(benchmark::State& state) {
  std::function<xcs::stats()> stats;
  rate_limited(state, [&](const xcs::rate_limiter& limiter, const std::shared_ptr<start_log>& log) {
    auto f = xcs::jit(four_limited(limited_op(limiter, log)));
    stats = [f] { return f.stats(); };
    return [f] { benchmark::DoNotOptimize(f(1)); };
  });
  const xcs::stats s = stats();
  state.counters["rate_wait_s"] = static_cast<double>(s.ops.at(0).rate_wait_ns) / 1e9;
}

/// The direct call: each op waits for its token on the caller's thread.
void BM_Serial_RateLimit(benchmark::State& state) {
  rate_limited(state, [](const xcs::rate_limiter& limiter, const std::shared_ptr<start_log>& log) {
    auto body = four_limited(limited_op(limiter, log));
    return [body] { benchmark::DoNotOptimize(body(1)); };
  });
}

// ---- 5. retry: an op that fails twice, then succeeds, under xcs::retry(3, 20 ms) ------------

constexpr auto kBackoff = 20ms;

/// The attempts of one call: the first two throw, the third returns v * 10 (so a call of
/// flaky(4) + other(4) returns 44).
struct flaky_attempts {
  start_log starts;
  std::atomic<int> n{0};
  int attempt(int v) {
    starts.add(now_ns());
    if (++n < 3) throw std::runtime_error("attempt " + std::to_string(n.load()));
    return v * 10;
  }
};

template <class Call>
void retried(benchmark::State& state, flaky_attempts& a, Call&& call) {
  spread took, gap1, gap2;
  int wrong = 0, value = 0;
  for (auto _ : state) {
    a.n = 0;
    a.starts.take();
    const std::int64_t t0 = now_ns();
    value = call(4);
    const std::int64_t ns = now_ns() - t0;
    wrong += value != 44;
    state.SetIterationTime(static_cast<double>(ns) / 1e9);
    took.add(to_ms(ns));
    const auto s = a.starts.take();
    if (s.size() != 3) {
      ++wrong;
      continue;
    }
    gap1.add(to_ms(s[1] - s[0]));
    gap2.add(to_ms(s[2] - s[1]));
  }
  took.report(state, "ms");
  gap1.report(state, "gap_1_to_2_ms");  // uniform over [0, 20] ms (full jitter)
  gap2.report(state, "gap_2_to_3_ms");  // uniform over [0, 40] ms
  state.counters["value"] = value;
  state.counters["wrong"] = wrong;
}

auto flaky_op(const std::shared_ptr<flaky_attempts>& a) {
  return xcs::op(
      "flaky", [a](int v) { return a->attempt(v); }, xcs::retry(3, kBackoff));
}
auto other_op = xcs::op("other", [](int v) { return v; });

void BM_Jit_Retry(benchmark::State& state) {
  auto a = std::make_shared<flaky_attempts>();
  auto flaky = flaky_op(a);
  auto f = xcs::jit([flaky](auto v) { return flaky(v) + other_op(v); });
  a->n = 0;
  f(4);  // traces and compiles
  auto retries = [&] {
    for (const auto& op : f.stats().ops)
      if (op.name == "flaky") return op.retries;
    return std::uint64_t{0};
  };
  const std::uint64_t before = retries();
  retried(state, *a, [&](int v) { return f(v); });
  state.counters["retries_per_call"] =
      static_cast<double>(retries() - before) / static_cast<double>(state.iterations());
  state.counters["target_retries_per_call"] = 2;
}

/// The direct call: the op's own retry loop, waiting on the caller's thread.
void BM_Serial_Retry(benchmark::State& state) {
  auto a = std::make_shared<flaky_attempts>();
  auto flaky = flaky_op(a);
  retried(state, *a, [&](int v) { return flaky(v) + other_op(v); });
}

constexpr auto kRetryDeadline = 50ms;

/// An op that always fails under xcs::retry(5, 200 ms), in a call with a 50 ms deadline: a
/// backoff drawn past the deadline ends the call with the op's failure; no attempt starts
/// after the deadline either way.
template <class F>
void retry_deadline(benchmark::State& state, const F& f, start_log& log) {
  auto bounded = f.with_deadline(kRetryDeadline);
  try {
    bounded(1);  // traces and compiles
  } catch (...) {
  }
  std::this_thread::sleep_for(kRetryDeadline);
  log.take();
  spread took;
  int after = 0, deadline_exceeded = 0, op_failure = 0, attempts = 0;
  double latest = -1e9;
  for (auto _ : state) {
    const std::int64_t t0 = now_ns();
    try {
      bounded(1);
    } catch (const xcs::deadline_exceeded&) {
      ++deadline_exceeded;
    } catch (const std::runtime_error&) {
      ++op_failure;
    }
    const std::int64_t ns = now_ns() - t0;
    state.SetIterationTime(static_cast<double>(ns) / 1e9);
    took.add(to_ms(ns));
    // Wait out the longest backoff before reading the log: a late attempt shows by then.
    std::this_thread::sleep_for(250ms);
    const std::int64_t deadline = t0 + kRetryDeadline / 1ns;
    for (std::int64_t t : log.take()) {
      after += t > deadline;
      latest = std::max(latest, to_ms(t - deadline));
      ++attempts;
    }
  }
  took.report(state, "ms");
  state.counters["attempts_per_call"] =
      static_cast<double>(attempts) / static_cast<double>(state.iterations());
  state.counters["attempts_after_deadline"] = after;
  state.counters["target_attempts_after_deadline"] = 0;
  state.counters["latest_attempt_vs_deadline_ms"] = latest;
  state.counters["deadline_exceeded"] = deadline_exceeded;
  state.counters["op_failure"] = op_failure;
}

auto always_failing(const std::shared_ptr<start_log>& log) {
  return xcs::op(
      "failing",
      [log](int) -> int {
        log->add(now_ns());
        throw std::runtime_error("fails");
      },
      xcs::retry(5, 200ms));
}

void BM_Jit_RetryDeadline(benchmark::State& state) {
  auto log = std::make_shared<start_log>();
  auto failing = always_failing(log);
  auto f = xcs::jit([failing](auto v) { return failing(v) + other_op(v); });
  retry_deadline(state, f, *log);
}

/// The direct call under the same deadline: a plain-typed body falls back, so it runs directly
/// with the deadline checked at each op and before each retry.
void BM_Serial_RetryDeadline(benchmark::State& state) {
  auto log = std::make_shared<start_log>();
  auto failing = always_failing(log);
  auto f = xcs::jit([failing](int v) { return failing(v) + other_op(v); });
  retry_deadline(state, f, *log);
  state.counters["fallback_calls"] = static_cast<double>(f.stats().fallback_calls);
}

// ---- 6. memory: 100,000 calls, a third of them ended by a 1 ms deadline ---------------------

constexpr auto kShortDeadline = 1ms;
constexpr auto kSlowWait = 20ms;  // what the slow op would wait if not stopped

long memory_calls() {
  if (const char* env = std::getenv("XCS_POLICY_CALLS")) {
    long n = std::atol(env);
    if (n > 0) return n;
  }
  return 100'000;
}

/// Calls `call(i)` for i in [0, n): returns 1 if it hit the deadline (every third should);
/// reports resident memory and threads after the first 10% and at the end.
template <class Call>
void deadline_memory(benchmark::State& state, Call&& call) {
  const long n = memory_calls();
  for (auto _ : state) {
    long hits = 0, unexpected = 0;
    auto run = [&](long from, long to) {
      for (long i = from; i < to; ++i) {
        const int h = call(static_cast<int>(i));
        hits += h;
        unexpected += h != (i % 3 == 0);
      }
    };
    const std::int64_t t0 = now_ns();
    run(0, n / 10);
    const double rss_warm = xcs_bench::rss_mib();
    const int threads_warm = status_threads();
    run(n / 10, n);
    const double rss_end = xcs_bench::rss_mib();
    const int threads_end = status_threads();
    const std::int64_t elapsed = now_ns() - t0;
    std::this_thread::sleep_for(1s);
    state.counters["calls"] = static_cast<double>(n);
    state.counters["deadline_hits"] = static_cast<double>(hits);
    state.counters["unexpected_outcomes"] = static_cast<double>(unexpected);
    state.counters["us_per_call"] = static_cast<double>(elapsed) / 1e3 / static_cast<double>(n);
    state.counters["rss_warm_MiB"] = rss_warm;
    state.counters["rss_end_MiB"] = rss_end;
    state.counters["rss_growth_KiB"] = (rss_end - rss_warm) * 1024.0;
    state.counters["target_rss_growth_KiB"] = 1024.0;
    state.counters["threads_warm"] = threads_warm;
    state.counters["threads_end"] = threads_end;
    state.counters["threads_settled"] = status_threads();
  }
}

auto quick_op = xcs::op("quick", [](int v) { return v + 1; });

void BM_Jit_DeadlineMemory(benchmark::State& state) {
  // Every third call waits (stop-aware) well past the call's 1 ms deadline.
  auto slow = xcs::op(
      "maybe_slow",
      [](int v, std::stop_token stop) {
        if (v % 3 == 0) wait_or_stop(stop, kSlowWait);
        return v;
      },
      xcs::blocking);
  auto f = xcs::jit([slow](auto v) { return quick_op(v) + slow(v); });
  auto bounded = f.with_deadline(kShortDeadline);
  deadline_memory(state, [&](int i) {
    try {
      benchmark::DoNotOptimize(bounded(i));
      return 0;
    } catch (const xcs::deadline_exceeded&) {
      return 1;
    }
  });
  state.counters["deadline_exceeded_calls"] =
      static_cast<double>(f.stats().deadline_exceeded_calls);
}

struct deadline_by_hand : std::runtime_error {
  deadline_by_hand() : std::runtime_error("deadline") {}
};

/// The direct call with a deadline by hand: the slow op waits until the call's deadline, then
/// the call throws.
void BM_Serial_DeadlineMemory(benchmark::State& state) {
  deadline_memory(state, [&](int i) {
    const auto deadline = std::chrono::steady_clock::now() + kShortDeadline;
    try {
      int r = quick_op(i);
      if (i % 3 == 0) {
        std::this_thread::sleep_until(deadline);
        throw deadline_by_hand();
      }
      benchmark::DoNotOptimize(r + i);
      return 0;
    } catch (const deadline_by_hand&) {
      return 1;
    }
  });
}

/// Registers a figure timed by SetIterationTime over `calls` calls.
void per_call(const char* name, void (*fn)(benchmark::State&), int calls) {
  benchmark::RegisterBenchmark(name, fn)->UseManualTime()->Iterations(calls)->Unit(
      benchmark::kMillisecond);
}

/// Registers a figure that runs once, timed as a whole.
void whole(const char* name, void (*fn)(benchmark::State&)) {
  benchmark::RegisterBenchmark(name, fn)->UseRealTime()->Iterations(1)->Unit(
      benchmark::kMillisecond);
}

// Each deadline figure runs 10 calls of 100 ms (the direct call one call of 10 s); the rate
// limit 5 s (plus the calls in flight at its end); the memory figure 100,000 calls.
const int kRegistered = [] {
  per_call("BM_Serial_DeadlineBlocking", BM_Serial_DeadlineBlocking, 1);
  per_call("BM_Jit_DeadlineBlocking", BM_Jit_DeadlineBlocking, 10);
  per_call("BM_Jit_DeadlineStagedRead", BM_Jit_DeadlineStagedRead, 10);
  per_call("BM_StdAsync_DeadlineBlocking", BM_StdAsync_DeadlineBlocking, 10);
  per_call("BM_Jit_DeadlineAsyncOp", BM_Jit_DeadlineAsyncOp, 10);
  per_call("BM_StdAsync_DeadlineStopCallback", BM_StdAsync_DeadlineStopCallback, 10);
  per_call("BM_Serial_Cancel", BM_Serial_Cancel, 10);
  per_call("BM_StdAsync_Cancel", BM_StdAsync_Cancel, 10);
  per_call("BM_Jit_Cancel", BM_Jit_Cancel, 10);
  per_call("BM_Serial_FailFast", BM_Serial_FailFast, 10);
  per_call("BM_StdAsync_FailFast", BM_StdAsync_FailFast, 10);
  per_call("BM_Jit_FailFast", BM_Jit_FailFast, 10);
  per_call("BM_Jit_FailFastMaxConcurrency2", BM_Jit_FailFastMaxConcurrency2, 10);
  whole("BM_Serial_RateLimit", BM_Serial_RateLimit);
  whole("BM_Jit_RateLimit", BM_Jit_RateLimit);
  per_call("BM_Serial_Retry", BM_Serial_Retry, 20);
  per_call("BM_Jit_Retry", BM_Jit_Retry, 20);
  per_call("BM_Serial_RetryDeadline", BM_Serial_RetryDeadline, 20);
  per_call("BM_Jit_RetryDeadline", BM_Jit_RetryDeadline, 20);
  whole("BM_Serial_DeadlineMemory", BM_Serial_DeadlineMemory);
  whole("BM_Jit_DeadlineMemory", BM_Jit_DeadlineMemory);
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
