// SPDX-License-Identifier: MIT
// Users build with strict warnings: this program includes <xcs/xcs.hpp> and instantiates what
// a body commonly uses (ops with options, async ops, operators, containers, xcs::map and
// structured bindings, reads, nesting, stats). The
// test strict_warnings_<compiler> compiles it with -Werror -Wall -Wextra -Wpedantic -Wshadow
// -Wconversion for each compiler found, then runs it.
#include <xcs/xcs.hpp>

#include <array>
#include <cstddef>
#include <iostream>
#include <memory>
#include <span>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

namespace {

int increment(int x) { return x + 1; }

auto twice = xcs::op("twice", [](int x) { return 2 * x; });
auto half = xcs::op("half", [](double x) { return x / 2.0; });
auto shout = xcs::op(
    "shout", [](const std::string& s) { return s + "!"; }, xcs::max_concurrency(2));
auto fetch = xcs::op(
    "fetch", [](const std::string& url) { return "<" + url + ">"; }, xcs::blocking);
auto count = xcs::op("count", [](const std::vector<int>& v) { return v.size(); });
auto split =
    xcs::op("split", [](int n) { return std::vector<int>(static_cast<std::size_t>(n), n); });
auto first = xcs::op("first", [](std::span<const int> s) { return s.empty() ? 0 : s[0]; });
auto deref = xcs::op("deref", [](const std::unique_ptr<int>& p) { return *p; });
auto log_line = xcs::op("log", [](const std::string&) {});
auto unnamed = xcs::op([](int x) { return x + 1; });
auto inc = xcs::op("inc", increment);  // a function pointer
auto later = xcs::async_op("later", [](int x, xcs::completion<int> done) { done(x * 10); });
auto both = xcs::op("both", [](int x) { return std::make_pair(x, std::to_string(x)); });

int check(bool ok, const char* what) {
  if (!ok) std::cerr << "strict_warnings: wrong result: " << what << "\n";
  return ok ? 0 : 1;
}

}  // namespace

int main() {
  int failures = 0;

  auto arithmetic = xcs::jit([](auto a, auto b) {
    auto x = twice(a) + twice(b) * 3 - 1;
    x += 2;
    x -= twice(a);
    x *= 2;
    x /= 2;
    x %= 1000;
    auto y = -unnamed(b) + inc(a) - inc(a);
    return std::make_tuple(x, y, half(x) > 1.5, x == y, x != y, x < y, x <= y, x >= y);
  });
  auto [x, y, gt, eq, ne, lt, le, ge] = arithmetic(1, 2);
  failures += check(x == 13 && y == -3 && gt && !eq && ne && !lt && !le && ge, "arithmetic");

  auto strings = xcs::jit([](const auto& a, const auto& b) {
    log_line(a);
    return std::make_pair(shout(a) + "\n" + fetch(b), shout("literal"));
  });
  auto [text, lit] = strings(std::string("a"), std::string("b"));
  failures += check(text == "a!\n<b>" && lit == "literal!", "strings");

  auto containers = xcs::jit([](const auto& v, const auto& arr) {
    std::vector<decltype(twice(v[0]))> doubled;
    for (const auto& e : v) doubled.push_back(twice(e));
    std::array<decltype(twice(arr[0])), 2> pair{twice(arr[0]), twice(arr[1])};
    return std::make_tuple(count(doubled), doubled, pair, v.size());
  });
  auto [n, doubled, pair, size] = containers(std::vector<int>{1, 2, 3}, std::array<int, 2>{4, 5});
  failures += check(n == 3 && doubled[2] == 6 && pair[1] == 10 && size == 3, "containers");

  // Reads: the call runs staged.
  auto staged = xcs::jit([](auto a, auto b) {
    int total = 0;
    for (const auto& e : split(a)) total += static_cast<int>(twice(e));
    if (twice(b) > 4) return total + static_cast<int>(split(b).size());
    return total;
  });
  failures += check(staged(2, 3) == 11, "staged");

  auto mapped = xcs::jit([](const auto& v, auto k) {
    auto [number, digits] = both(k);
    auto twice_v = xcs::map(twice, v);
    return std::make_tuple(xcs::map(later, twice_v), number + xcs::get<0>(both(k)), shout(digits));
  });
  auto [tens, sum, shouted] = mapped(std::vector<int>{1, 2}, 3);
  failures += check(tens == std::vector<int>{20, 40} && sum == 6 && shouted == "3!", "map");

  auto inner = xcs::jit([](auto a) { return twice(a) + twice(a); });
  auto outer = xcs::jit([&](auto a, auto b) { return inner(a) + inner(b); });
  failures += check(outer(1, 2) == 12, "nested");

  auto spans = xcs::jit([](auto a, auto b) { return first(a) + first(b); });
  const std::vector<int> data{7, 8};
  failures += check(spans(std::span<const int>(data), std::span<const int>(data)) == 14, "span");

  auto owned = xcs::jit([](const auto& p, auto k) { return deref(p) + twice(k); });
  auto p = std::make_unique<int>(5);
  failures += check(owned(p, 1) == 7 && p != nullptr, "unique_ptr");

  arithmetic.set_cache_capacity(8);
  xcs::stats st = arithmetic.stats();
  std::cout << st << "\n"
            << fmt::format("{}", st) << "\n"
            << arithmetic.explain(1, 2) << arithmetic.dot(1, 2) << staged.explain(2, 3);
  for (const xcs::op_stats& o : st.ops) failures += check(!o.name.empty(), "op stats");
  failures += check(xcs::thread_count() >= 1 && xcs::available_cpus() >= 1, "executor");
  std::cout << "pool started: " << xcs::pool_started() << ", shout bound "
            << shout.max_concurrency() << ", peak " << shout.peak_concurrency() << ", fetch "
            << (fetch.blocking() ? "blocking" : "not blocking") << "\n";
  try {
    xcs::set_thread_count(0);
  } catch (const xcs::error& e) {
    std::cout << "xcs::error: " << e.what() << "\n";
  }
  return failures;
}
