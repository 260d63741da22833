// SPDX-License-Identifier: MIT
// Differential property test: random traced programs give the same results, exceptions and op
// invocation counts through xcs::jit as when called directly.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <xcs/xcs.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <typeinfo>
#include <utility>
#include <vector>

#include "property_gen.hpp"

namespace {

using namespace xcs_property;

// ---- ops ------------------------------------------------------------------------------------

constexpr int kTags = 64;
constexpr int kInnerTag = 60;  // both ops of the nested jitted function count here
std::array<std::atomic<int>, kTags> g_counts{};

void reset_counts() {
  for (auto& c : g_counts) c.store(0);
}

/// What a throwing op throws: carries the op's tag, so the winning exception names its op.
struct program_error : std::runtime_error {
  program_error(int tag, int value)
      : std::runtime_error(fmt::format("op #{} rejects {}", tag, value)), id(tag) {}
  int id;
};

/// Counts the call of op `tag`; throws when `mode` > 0 divides `value`. Some ops throw a plain
/// int, which is not a std::exception.
void enter(int tag, int mode, long value) {
  g_counts[static_cast<std::size_t>(tag)].fetch_add(1, std::memory_order_relaxed);
  if (mode >= 100) {
    auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(20);
    while (std::chrono::steady_clock::now() < until) {
    }
    mode %= 100;
  }
  if (mode > 0 && ((value % mode) + mode) % mode == 0) {
    if (tag % 4 == 3) throw tag * 1000 + 42;
    throw program_error(tag, static_cast<int>(value));
  }
}

std::string clip(std::string s, std::size_t n) {
  if (s.size() > n) s.resize(n);
  return s;
}

auto mix2 = xcs::op("mix2", [](int tag, int mode, int x, int y) {
  enter(tag, mode, x + y);
  return (x * 31 + y + tag) % 1009;
});
auto mix3 = xcs::op("mix3", [](int tag, int mode, int x, int y, int z) {
  enter(tag, mode, x - y + z);
  return (x * 7 + y * 3 - z + tag) % 1009;
});
auto decorate = xcs::op("decorate", [](int tag, int mode, const std::string& s, int x) {
  enter(tag, mode, x);
  return clip(s + std::to_string(((x % 10) + 10) % 10), 12);
});
auto length = xcs::op("length", [](int tag, int mode, const std::string& s) {
  enter(tag, mode, static_cast<long>(s.size()));
  return static_cast<int>(s.size()) + tag;
});
auto clip_op = xcs::op("clip", [](int tag, int mode, const std::string& s) {
  enter(tag, mode, static_cast<long>(s.size()));
  return clip(s, 12);
});
auto pick = xcs::op("pick", [](int tag, int mode, bool c, int z) {
  enter(tag, mode, z);
  return c ? z : (tag - z) % 1009;
});
auto sum = xcs::op("sum", [](int tag, int mode, const std::vector<int>& v) {
  long total = 0;
  for (int x : v) total += x;
  enter(tag, mode, total + static_cast<long>(v.size()));
  return static_cast<int>(total % 1009);
});
auto join = xcs::op("join", [](int tag, int mode, const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += s + "|";
  enter(tag, mode, static_cast<long>(out.size()));
  return clip(out, 16);
});
auto sink = xcs::op("sink", [](int tag, int mode, int x) { enter(tag, mode, x); });
auto spread = xcs::op("spread", [](int tag, int mode, int x) {
  enter(tag, mode, x);
  int y = x % 1009;
  return std::vector<int>{y, y + 1, y + 2};
});
auto inner_a = xcs::op("inner_a", [](int x) {
  enter(kInnerTag, 0, 0);
  return (x + 1) % 1009;
});
auto inner_b = xcs::op("inner_b", [](int y) {
  enter(kInnerTag, 0, 0);
  return (y * 2) % 1009;
});

/// The nested function: jitted on its own, and inlined into the outer trace.
auto inner_body = [](const auto& x, const auto& y) {
  auto p = inner_a(x);
  auto q = inner_b(y);
  return (p + q) % 1009;
};
const auto inner_jit = xcs::jit(inner_body);

// ---- the interpreter ------------------------------------------------------------------------

/// Runs program `p` on plain values (the direct call) or on traced values (the trace). One op
/// call per statement, so that program order is instruction order in both.
template <class Inner, class A, class S, class V, class W>
auto interpret(const program& p, const Inner& inner, const A& a, const A& b, const S& s, const V& v,
               const W& w) {
  using I = std::decay_t<A>;
  using Str = std::decay_t<S>;
  std::vector<I> i(kIntRegs, a);
  i[1] = b;
  for (std::size_t r = 2; r < kIntRegs; ++r) {
    if (r - 2 < v.size()) {
      i[r] = v[r - 2];
    } else {
      i[r] = r % 2 ? a : b;
    }
  }
  std::vector<Str> st(kStrRegs, s);
  for (std::size_t r = 1; r < kStrRegs; ++r) {
    if (r - 1 < w.size()) st[r] = w[r - 1];
  }
  auto S_ = [&](int r) -> Str& { return st[static_cast<std::size_t>(r % kStrRegs)]; };
  auto I_ = [&](int r) -> I& { return i[static_cast<std::size_t>(r)]; };
  for (const instr& in : p.code) {
    const auto& x = in.src;
    I& d = I_(in.dst);
    switch (in.op) {
      case kind::mix2:
        d = mix2(in.tag, in.mode, I_(x[0]), I_(x[1]));
        break;
      case kind::mix3:
        d = mix3(in.tag, in.mode, I_(x[0]), I_(x[1]), I_(x[2]));
        break;
      case kind::decorate:
        S_(in.dst) = decorate(in.tag, in.mode, S_(x[0]), I_(x[1]));
        break;
      case kind::length:
        d = length(in.tag, in.mode, S_(x[0]));
        break;
      case kind::arith:
        switch (in.k % 6) {
          case 0:
            d = (I_(x[0]) + I_(x[1])) % 997;
            break;
          case 1:
            d = (I_(x[0]) - I_(x[1])) % 997;
            break;
          case 2:
            d = (I_(x[0]) * I_(x[1])) % 997;
            break;
          case 3:
            d = (I_(x[0]) / (I_(x[1]) % 7 + 8)) % 997;
            break;
          case 4:
            d = (I_(x[0]) % (I_(x[1]) % 7 + 8)) % 997;
            break;
          default:
            d = (-I_(x[0])) % 997;
            break;
        }
        break;
      case kind::concat:
        S_(in.dst) = clip_op(in.tag, in.mode, S_(x[0]) + S_(x[1]));
        break;
      case kind::compare:
        switch (in.k % 7) {
          case 0:
            d = pick(in.tag, in.mode, I_(x[0]) < I_(x[1]), I_(x[2]));
            break;
          case 1:
            d = pick(in.tag, in.mode, I_(x[0]) <= I_(x[1]), I_(x[2]));
            break;
          case 2:
            d = pick(in.tag, in.mode, I_(x[0]) > I_(x[1]), I_(x[2]));
            break;
          case 3:
            d = pick(in.tag, in.mode, I_(x[0]) >= I_(x[1]), I_(x[2]));
            break;
          case 4:
            d = pick(in.tag, in.mode, I_(x[0]) == I_(x[1]), I_(x[2]));
            break;
          case 5:
            d = pick(in.tag, in.mode, I_(x[0]) != I_(x[1]), I_(x[2]));
            break;
          default:
            d = pick(in.tag, in.mode, S_(x[0]) == S_(x[1]), I_(x[2]));
            break;
        }
        break;
      case kind::pack_sum: {
        std::vector<I> pack;
        for (int j = 0; j < in.nsrc; ++j) pack.push_back(I_(x[static_cast<std::size_t>(j)]));
        d = sum(in.tag, in.mode, pack);
        break;
      }
      case kind::pack_join: {
        std::vector<Str> pack;
        for (int j = 0; j < in.nsrc; ++j) pack.push_back(S_(x[static_cast<std::size_t>(j)]));
        S_(in.dst) = join(in.tag, in.mode, pack);
        break;
      }
      case kind::sink:
        sink(in.tag, in.mode, I_(x[0]));
        break;
      case kind::spread:
        d = spread(in.tag, in.mode, I_(x[0]))[static_cast<std::size_t>(in.k % 3)];
        break;
      case kind::arg_sum: {
        std::vector<I> all(v.begin(), v.end());
        d = sum(in.tag, in.mode, all);
        break;
      }
      case kind::arg_element:
        if (!v.empty()) d = v[static_cast<std::size_t>(in.k) % v.size()];
        break;
      case kind::nested:
        d = inner(I_(x[0]), I_(x[1]));
        break;
      case kind::branch:
        if (I_(x[0]) > in.k % 300) {
          d = mix2(in.tag, in.mode, I_(x[1]), I_(x[2]));
        } else {
          d = mix2(in.tag, in.mode, I_(x[2]), I_(x[1]));
        }
        break;
      case kind::user_throw:
        throw std::invalid_argument(fmt::format("body rejects #{}", in.tag));
      case kind::count_:
        break;
    }
  }
  std::vector<I> out_i;
  for (int r : p.out_ints) out_i.push_back(I_(r));
  std::vector<Str> out_s;
  for (int r : p.out_strs) out_s.push_back(S_(r));
  return std::tuple<I, std::pair<Str, I>, std::vector<I>, std::vector<Str>>(
      I_(p.out_int), std::pair<Str, I>(S_(p.out_pair_str), I_(p.out_pair_int)), out_i, out_s);
}

using result_t =
    std::tuple<int, std::pair<std::string, int>, std::vector<int>, std::vector<std::string>>;

/// The jitted function of a program.
auto make_jitted(const program& p) {
  return xcs::jit([&p](const auto& a, const auto& b, const auto& s, const auto& v, const auto& w) {
    return interpret(p, inner_jit, a, b, s, v, w);
  });
}
using jitted_t = decltype(make_jitted(std::declval<const program&>()));

// ---- outcomes -------------------------------------------------------------------------------

enum class ending { value, program_error, int_thrown, invalid_argument, other, unknown };

struct outcome {
  ending end = ending::value;
  std::string what;
  result_t value;
  std::array<int, kTags> counts{};
};

template <class Call>
outcome observe(Call&& call) {
  outcome o;
  reset_counts();
  try {
    o.value = call();
  } catch (const program_error& e) {
    o.end = ending::program_error;
    o.what = fmt::format("program_error(id {}): {}", e.id, e.what());
  } catch (const std::invalid_argument& e) {
    o.end = ending::invalid_argument;
    o.what = fmt::format("std::invalid_argument: {}", e.what());
  } catch (const std::exception& e) {
    o.end = ending::other;
    o.what = fmt::format("{}: {}", typeid(e).name(), e.what());
  } catch (int i) {
    o.end = ending::int_thrown;
    o.what = fmt::format("int {}", i);
  } catch (...) {
    o.end = ending::unknown;
    o.what = "unknown exception";
  }
  for (int t = 0; t < kTags; ++t) o.counts[static_cast<std::size_t>(t)] = g_counts[t].load();
  return o;
}

std::string show(const result_t& r) {
  return fmt::format("({}, ({}, {}), [{}], [{}])", std::get<0>(r), std::get<1>(r).first,
                     std::get<1>(r).second, fmt::join(std::get<2>(r), ", "),
                     fmt::join(std::get<3>(r), ", "));
}

std::string show(const outcome& o) {
  std::string counts;
  for (int t = 0; t < kTags; ++t) {
    if (o.counts[static_cast<std::size_t>(t)]) {
      counts += fmt::format(" #{}:{}", t, o.counts[static_cast<std::size_t>(t)]);
    }
  }
  return fmt::format("{}; op calls{}",
                     o.end == ending::value ? "returned " + show(o.value) : "threw " + o.what,
                     counts);
}

/// Empty if the jitted outcome is one the direct call allows, else what differs. When the
/// direct call throws, ops after the throwing one in program order do not run directly, but
/// may have been started by the plan before the exception: they may run at most once.
std::string differ(const outcome& direct, const outcome& jit) {
  if (direct.end != jit.end || direct.what != jit.what ||
      (direct.end == ending::value && direct.value != jit.value)) {
    return fmt::format("outcomes differ:\n  direct: {}\n  jitted: {}", show(direct), show(jit));
  }
  int last = -1;  // the last op the direct call ran: the throwing one, if it threw
  for (int t = 0; t < kInnerTag; ++t) {
    if (direct.counts[static_cast<std::size_t>(t)]) last = t;
  }
  for (int t = 0; t < kTags; ++t) {
    int d = direct.counts[static_cast<std::size_t>(t)], j = jit.counts[static_cast<std::size_t>(t)];
    bool ok = d == j;
    if (!ok && direct.end != ending::value) {
      ok = t == kInnerTag ? j >= d : (t > last && j <= 1);
    }
    if (!ok) {
      return fmt::format("op #{} ran {} time(s) jitted, {} directly:\n  direct: {}\n  jitted: {}",
                         t, j, d, show(direct), show(jit));
    }
  }
  return {};
}

/// What a run of many programs saw, to show the test covered what it claims.
struct coverage {
  int programs = 0, calls = 0, planned = 0, fell_back = 0, staged = 0, threw = 0, threw_int = 0,
      threw_body = 0, returned = 0;
};

bool has(const program& p, kind k) {
  for (const instr& in : p.code) {
    if (in.op == k) return true;
  }
  return false;
}

/// Runs program `p` on its argument sets, jitted and directly. Empty if all agree.
std::string check(const program& p, coverage* cov = nullptr) {
  std::vector<call_args> args = generate_args(p.seed);
  auto f = make_jitted(p);
  // Calls: a trace, a cache hit, new values of the same signature, a retrace, then the first
  // arguments again.
  const int order[] = {0, 0, 1, 2, 0};
  for (int c : order) {
    const call_args& x = args[static_cast<std::size_t>(c)];
    outcome direct =
        observe([&]() -> result_t { return interpret(p, inner_body, x.a, x.b, x.s, x.v, x.w); });
    outcome jit = observe([&]() -> result_t { return f(x.a, x.b, x.s, x.v, x.w); });
    std::string d = differ(direct, jit);
    if (!d.empty()) {
      return fmt::format("call {} (a={}, b={}, s=\"{}\", v=[{}], w=[{}]): {}", c, x.a, x.b, x.s,
                         fmt::join(x.v, ", "), fmt::join(x.w, ", "), d);
    }
    if (cov) {
      ++cov->calls;
      cov->returned += direct.end == ending::value;
      cov->threw += direct.end == ending::program_error;
      cov->threw_int += direct.end == ending::int_thrown;
      cov->threw_body += direct.end == ending::invalid_argument;
    }
  }
  xcs::stats st = f.stats();
  if (st.calls != std::size(order)) {
    return fmt::format("stats().calls is {}, expected {}", st.calls, std::size(order));
  }
  if (!has(p, kind::branch) && !has(p, kind::user_throw) && !st.fallback_reason.empty() &&
      st.fallback_reason.rfind("no independent ops", 0) != 0 &&
      st.fallback_reason != "the body records no ops") {
    return "a program without branches fell back: " + st.fallback_reason;
  }
  // A branch reads a value: the signature runs staged (never falls back), on every call.
  if (has(p, kind::branch) && !has(p, kind::user_throw) &&
      (st.fallback_calls != 0 || st.staged_calls != st.calls ||
       st.staged_reason.find("the body reads") == std::string::npos)) {
    return fmt::format(
        "a program with a data-dependent branch did not run staged: staged_calls={} of {}, "
        "fallback_calls={}, staged_reason '{}', fallback_reason '{}'",
        st.staged_calls, st.calls, st.fallback_calls, st.staged_reason, st.fallback_reason);
  }
  if (cov) {
    ++cov->programs;
    cov->planned += st.plan_runs > 0;
    cov->fell_back += st.fallback_calls > 0;
    cov->staged += st.staged_calls > 0;
  }
  return {};
}

/// Drops instructions and outputs while `fails` still holds; returns the smallest program.
template <class Pred>
program shrink(program p, Pred fails) {
  for (bool changed = true; changed;) {
    changed = false;
    for (std::size_t i = p.code.size(); i-- > 0;) {
      program q = p;
      q.code.erase(q.code.begin() + static_cast<std::ptrdiff_t>(i));
      if (fails(q)) {
        p = std::move(q);
        changed = true;
      }
    }
    for (auto* outs : {&p.out_ints, &p.out_strs}) {
      for (std::size_t i = outs->size(); i-- > 0;) {
        program q = p;
        auto& qo = outs == &p.out_ints ? q.out_ints : q.out_strs;
        qo.erase(qo.begin() + static_cast<std::ptrdiff_t>(i));
        if (fails(q)) {
          p = std::move(q);
          changed = true;
        }
      }
    }
  }
  return p;
}

std::uint64_t env_number(const char* name, std::uint64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::strtoull(v, nullptr, 0) : fallback;
}

// Sanitizers slow each call down 5-20x: fewer programs keep the suite within CI time.
#if defined(XCS_SANITIZE_THREAD)
constexpr std::uint64_t kDefaultPrograms = 600;
#elif defined(XCS_SANITIZE_ADDRESS)
constexpr std::uint64_t kDefaultPrograms = 1500;
#else
constexpr std::uint64_t kDefaultPrograms = 6000;
#endif

TEST(PropertyTest, JitMatchesDirectCall) {
  // XCS_PROPERTY_SEED=<seed> XCS_PROPERTY_COUNT=1 reruns one program.
  const std::uint64_t base = env_number("XCS_PROPERTY_SEED", 20240601);
  const std::uint64_t count = env_number("XCS_PROPERTY_COUNT", kDefaultPrograms);
  coverage cov;
  auto t0 = std::chrono::steady_clock::now();
  int failures = 0;
  for (std::uint64_t i = 0; i < count && failures < 3; ++i) {
    program p = generate(base + i);
    std::string failure = check(p, &cov);
    if (failure.empty()) continue;
    ++failures;
    program small = shrink(p, [](const program& q) { return !check(q).empty(); });
    ADD_FAILURE() << "program seed " << p.seed << " differs: " << failure
                  << "\nminimal reproducer (" << small.code.size() << " of " << p.code.size()
                  << " instructions):\n"
                  << print(small) << "fails with: " << check(small)
                  << "\nrerun: XCS_PROPERTY_SEED=" << p.seed << " XCS_PROPERTY_COUNT=1";
  }
  double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::printf(
      "[property] %d programs, %d calls in %.2f s (seed %llu): %d ran a plan, %d staged, %d fell "
      "back; calls: %d returned, %d threw program_error, %d threw int, %d threw from the body\n",
      cov.programs, cov.calls, secs, static_cast<unsigned long long>(base), cov.planned, cov.staged,
      cov.fell_back, cov.returned, cov.threw, cov.threw_int, cov.threw_body);
  if (count >= 200 && failures == 0) {
    // The generator must reach every outcome, or the comparison proves little.
    EXPECT_GT(cov.planned, cov.programs / 4);
    EXPECT_GT(cov.fell_back, 0);
    EXPECT_GT(cov.staged, 0);
    EXPECT_GT(cov.returned, cov.calls / 4);
    EXPECT_GT(cov.threw, 0);
    EXPECT_GT(cov.threw_int, 0);
    EXPECT_GT(cov.threw_body, 0);
  }
}

TEST(PropertyTest, GeneratorIsReproducible) {
  for (std::uint64_t seed : {1ULL, 7ULL, 123456789ULL}) {
    EXPECT_EQ(print(generate(seed)), print(generate(seed)));
  }
  EXPECT_NE(print(generate(1)), print(generate(2)));
}

TEST(PropertyTest, ShrinkKeepsOnlyWhatFails) {
  // A stand-in failure: "fails" while the program has a throwing mix3. The shrinker must cut
  // a long program down to that one instruction.
  program p;
  for (std::uint64_t s = 1; !has(p, kind::mix3) || p.code.size() < 10; ++s) p = generate(s);
  for (instr& in : p.code) {
    if (in.op == kind::mix3) in.mode = 3;
  }
  auto fails = [](const program& q) {
    for (const instr& in : q.code) {
      if (in.op == kind::mix3 && in.mode == 3) return true;
    }
    return false;
  };
  program small = shrink(p, fails);
  ASSERT_EQ(small.code.size(), 1u) << print(small);
  EXPECT_EQ(small.code[0].op, kind::mix3);
  EXPECT_TRUE(small.out_ints.empty());
  EXPECT_NE(print(small).find("mix3("), std::string::npos);
}

TEST(PropertyTest, EveryInstructionKindAgreesOnItsOwn) {
  // One program per instruction kind, throwing and not, so a regression names the construct.
  for (int k = 0; k < static_cast<int>(kind::count_); ++k) {
    for (int mode : {0, 2}) {
      program p;
      p.seed = 77;
      for (int j = 0; j < 3; ++j) {
        instr in;
        in.op = static_cast<kind>(k);
        in.tag = j;
        in.mode = mode;
        in.dst = j + 2;
        in.k = 5 + j;
        in.src = {0, 1, 2 + j % 2, 3};
        in.nsrc = j + 1;
        p.code.push_back(in);
      }
      p.out_int = 2;
      p.out_pair_int = 3;
      p.out_ints = {4, 0};
      p.out_strs = {1};
      EXPECT_EQ(check(p), "") << print(p);
    }
  }
}

}  // namespace
