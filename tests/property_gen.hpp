// SPDX-License-Identifier: MIT
// Random traced programs for the differential property test: data, generator and printer.
#pragma once

#include <fmt/format.h>

#include <array>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

namespace xcs_property {

/// Registers of a program: a fixed file of ints and strings, so that dropping any instruction
/// (when shrinking) leaves a valid program.
inline constexpr int kIntRegs = 6;
inline constexpr int kStrRegs = 4;

enum class kind : std::uint8_t {
  mix2,         // i[dst] = mix2(tag, mode, i[a], i[b])
  mix3,         // i[dst] = mix3(tag, mode, i[a], i[b], i[c])            (fan-in)
  decorate,     // s[dst] = decorate(tag, mode, s[a], i[b])
  length,       // i[dst] = length(tag, mode, s[a])
  arith,        // i[dst] = (i[a] OP i[b]) % 997, OP by k: + - * / % neg
  concat,       // s[dst] = clip(tag, mode, s[a] + s[b])
  compare,      // i[dst] = pick(tag, mode, i[a] CMP i[b], i[c]), CMP by k; k >= 6: s[a] == s[b]
  pack_sum,     // i[dst] = sum(tag, mode, std::vector{i[src]...})     (0..4 sources)
  pack_join,    // s[dst] = join(tag, mode, std::vector{s[src]...})
  sink,         // sink(tag, mode, i[a]);  a void op
  spread,       // i[dst] = spread(tag, mode, i[a])[k % 3];  an op returning a vector
  arg_sum,      // i[dst] = sum(tag, mode, std::vector(v.begin(), v.end()))
  arg_element,  // i[dst] = v[k % v.size()]  (no-op if v is empty)
  nested,       // i[dst] = inner(i[a], i[b]);  a jitted function called inside the body
  branch,       // if (i[a] > k) i[dst] = mix2(...) else i[dst] = mix2(...);  the call runs staged
  user_throw,   // throw std::invalid_argument(...) from the body itself (not an op)
  count_
};

struct instr {
  kind op = kind::mix2;
  int tag = 0;  ///< identifies the instruction's op call in invocation counts
  /// mode % 100 > 0: the op throws when its input is divisible by it; mode >= 100: the op
  /// busy-waits ~20 us first.
  int mode = 0;
  int dst = 0;
  int k = 0;
  std::array<int, 4> src{};
  int nsrc = 0;  ///< for packs
};

struct program {
  std::uint64_t seed = 0;
  std::vector<instr> code;
  int out_int = 0;
  int out_pair_str = 0;
  int out_pair_int = 0;
  std::vector<int> out_ints;
  std::vector<int> out_strs;
};

/// Arguments of one call: (int a, int b, std::string s, std::vector<int> v,
/// std::vector<std::string> w).
struct call_args {
  int a = 0, b = 0;
  std::string s;
  std::vector<int> v;
  std::vector<std::string> w;
};

inline program generate(std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  program p;
  p.seed = seed;
  int n = pick(1, 24);
  // A few programs take a data-dependent branch or throw from the body; most do not.
  bool allow_branch = pick(0, 9) == 0;
  bool allow_user_throw = pick(0, 29) == 0;
  // Throwing ops are common enough that several throw in one call.
  int throw_rate = pick(0, 3) == 0 ? 0 : pick(2, 12);
  // In some programs ops take ~20 us, long enough for the plan to hand them to workers, so
  // that several throw at the same time on different threads.
  bool slow = pick(0, 5) == 0;
  int next_tag = 0;
  int last_int = 0;
  for (int i = 0; i < n; ++i) {
    instr in;
    int roll = pick(0, 99);
    if (roll < 14)
      in.op = kind::mix2;
    else if (roll < 22)
      in.op = kind::mix3;
    else if (roll < 30)
      in.op = kind::decorate;
    else if (roll < 35)
      in.op = kind::length;
    else if (roll < 48)
      in.op = kind::arith;
    else if (roll < 53)
      in.op = kind::concat;
    else if (roll < 59)
      in.op = kind::compare;
    else if (roll < 66)
      in.op = kind::pack_sum;
    else if (roll < 70)
      in.op = kind::pack_join;
    else if (roll < 76)
      in.op = kind::sink;
    else if (roll < 80)
      in.op = kind::spread;
    else if (roll < 83)
      in.op = kind::arg_sum;
    else if (roll < 87)
      in.op = kind::arg_element;
    else if (roll < 91)
      in.op = kind::nested;
    else if (roll < 96)
      in.op = allow_branch ? kind::branch : kind::mix2;
    else
      in.op = allow_user_throw ? kind::user_throw : kind::mix3;
    in.tag = next_tag++;
    in.mode = (throw_rate > 0 && pick(1, throw_rate) == 1) ? pick(2, 7) : 0;
    if (slow && pick(0, 1) == 0) in.mode += 100;
    in.k = pick(0, 999);
    // Chains read the last result; fan-out reads an older register again.
    bool chain = pick(0, 2) == 0;
    for (int& s : in.src) s = pick(0, kIntRegs - 1);
    if (chain) in.src[0] = last_int;
    in.nsrc = pick(0, 4);
    bool writes_str = in.op == kind::decorate || in.op == kind::concat || in.op == kind::pack_join;
    in.dst = writes_str ? pick(0, kStrRegs - 1) : pick(0, kIntRegs - 1);
    if (!writes_str) last_int = in.dst;
    p.code.push_back(in);
  }
  p.out_int = pick(0, kIntRegs - 1);
  p.out_pair_str = pick(0, kStrRegs - 1);
  p.out_pair_int = pick(0, kIntRegs - 1);
  for (int i = pick(0, 3); i > 0; --i) p.out_ints.push_back(pick(0, kIntRegs - 1));
  for (int i = pick(0, 2); i > 0; --i) p.out_strs.push_back(pick(0, kStrRegs - 1));
  return p;
}

/// Argument sets for a program: a few value sets and two vector sizes, so that calls hit the
/// cache, miss it on new values (same plan) and retrace on a new size.
inline std::vector<call_args> generate_args(std::uint64_t seed) {
  std::mt19937_64 rng(seed ^ 0x9e3779b97f4a7c15ULL);
  auto pick = [&](int lo, int hi) { return std::uniform_int_distribution<int>(lo, hi)(rng); };
  std::vector<call_args> out;
  int sizes[2] = {pick(0, 4), pick(0, 4)};
  for (int c = 0; c < 3; ++c) {
    call_args a;
    a.a = pick(-50, 300);
    a.b = pick(-50, 300);
    a.s = std::string(static_cast<std::size_t>(pick(0, 6)), static_cast<char>('a' + pick(0, 25)));
    int n = sizes[c == 2 ? 1 : 0];
    for (int i = 0; i < n; ++i) a.v.push_back(pick(-20, 200));
    for (int i = pick(0, 2); i > 0; --i) a.w.push_back(std::string(1, static_cast<char>('A' + i)));
    if (c == 1) a.w = out[0].w;  // same signature as call 0 but new values
    out.push_back(a);
  }
  return out;
}

inline std::string describe(const instr& in) {
  auto I = [](int r) { return fmt::format("i{}", r); };
  auto S = [](int r) { return fmt::format("s{}", r); };
  const auto& s = in.src;
  std::string m = fmt::format("#{}, {}", in.tag, in.mode);
  static const char* arith_ops[] = {"+", "-", "*", "/", "%", "neg"};
  static const char* cmp_ops[] = {"<", "<=", ">", ">=", "==", "!="};
  switch (in.op) {
    case kind::mix2:
      return fmt::format("{} = mix2({}, {}, {});", I(in.dst), m, I(s[0]), I(s[1]));
    case kind::mix3:
      return fmt::format("{} = mix3({}, {}, {}, {});", I(in.dst), m, I(s[0]), I(s[1]), I(s[2]));
    case kind::decorate:
      return fmt::format("{} = decorate({}, {}, {});", S(in.dst), m, S(s[0] % kStrRegs), I(s[1]));
    case kind::length:
      return fmt::format("{} = length({}, {});", I(in.dst), m, S(s[0] % kStrRegs));
    case kind::arith: {
      int o = in.k % 6;
      if (o == 5) return fmt::format("{} = (-{}) % 997;", I(in.dst), I(s[0]));
      if (o >= 3) {
        return fmt::format("{} = ({} {} ({} % 7 + 8)) % 997;", I(in.dst), I(s[0]), arith_ops[o],
                           I(s[1]));
      }
      return fmt::format("{} = ({} {} {}) % 997;", I(in.dst), I(s[0]), arith_ops[o], I(s[1]));
    }
    case kind::concat:
      return fmt::format("{} = clip({}, {} + {});", S(in.dst), m, S(s[0] % kStrRegs),
                         S(s[1] % kStrRegs));
    case kind::compare:
      if (in.k % 7 == 6) {
        return fmt::format("{} = pick({}, {} == {}, {});", I(in.dst), m, S(s[0] % kStrRegs),
                           S(s[1] % kStrRegs), I(s[2]));
      }
      return fmt::format("{} = pick({}, {} {} {}, {});", I(in.dst), m, I(s[0]), cmp_ops[in.k % 7],
                         I(s[1]), I(s[2]));
    case kind::pack_sum:
    case kind::pack_join: {
      std::string items;
      for (int j = 0; j < in.nsrc; ++j) {
        items += (j ? ", " : "") + (in.op == kind::pack_sum ? I(s[j]) : S(s[j] % kStrRegs));
      }
      return in.op == kind::pack_sum
                 ? fmt::format("{} = sum({}, vector{{{}}});", I(in.dst), m, items)
                 : fmt::format("{} = join({}, vector{{{}}});", S(in.dst), m, items);
    }
    case kind::sink:
      return fmt::format("sink({}, {});", m, I(s[0]));
    case kind::spread:
      return fmt::format("{} = spread({}, {})[{}];", I(in.dst), m, I(s[0]), in.k % 3);
    case kind::arg_sum:
      return fmt::format("{} = sum({}, vector(v.begin(), v.end()));", I(in.dst), m);
    case kind::arg_element:
      return fmt::format("if (!v.empty()) {} = v[{} % v.size()];", I(in.dst), in.k);
    case kind::nested:
      return fmt::format("{} = inner({}, {});  // a jitted function", I(in.dst), I(s[0]), I(s[1]));
    case kind::branch:
      return fmt::format("if ({} > {}) {} = mix2({}, {}, {}); else {} = mix2({}, {}, {});", I(s[0]),
                         in.k % 300, I(in.dst), m, I(s[1]), I(s[2]), I(in.dst), m, I(s[2]),
                         I(s[1]));
    case kind::user_throw:
      return fmt::format("throw std::invalid_argument(\"body rejects #{}\");", in.tag);
    case kind::count_:
      break;
  }
  return "?";
}

inline std::string print(const program& p) {
  std::string out = fmt::format(
      "program (seed {}): body(int a, int b, string s, vector<int> v, vector<string> w)\n"
      "  i0 = a; i1 = b; i2..i5 = v[0..3] (else a or b); s0 = s; s1..s3 = w[0..2] (else s)\n",
      p.seed);
  for (const instr& in : p.code) out += "  " + describe(in) + "\n";
  std::string ints, strs;
  for (int r : p.out_ints) ints += fmt::format("{}i{}", ints.empty() ? "" : ", ", r);
  for (int r : p.out_strs) strs += fmt::format("{}s{}", strs.empty() ? "" : ", ", r);
  out += fmt::format("  return tuple(i{}, pair(s{}, i{}), vector{{{}}}, vector{{{}}});\n",
                     p.out_int, p.out_pair_str, p.out_pair_int, ints, strs);
  return out;
}

}  // namespace xcs_property
