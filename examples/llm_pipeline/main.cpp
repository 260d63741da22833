// SPDX-License-Identifier: MIT
// llm_pipeline: an ensemble, a judge and a synthesis against an OpenAI-style endpoint over
// HTTP, run directly and under xcs::jit, with wall times and stats.
//
//   llm_pipeline --url http://host/v1/chat/completions [--n 4] [--question "..."]
//   XCS_LLM_URL=... llm_pipeline --questions "first?" "second?"     (batch mode)
//   llm_pipeline --batch questions.txt                             (batch mode, one per line)
//   llm_pipeline --local-server                                    (starts nginx, see README)
//   llm_pipeline --redis redis://host:6379 --rate 20 --batch q.txt   (replicas share a budget
//                                                                   and the answers)
#include <fmt/format.h>
#include <xcs/xcs.hpp>

#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "embed_demo.hpp"
#include "llm_client.hpp"
#include "local_server.hpp"
#include "pipeline.hpp"
#if defined(XCS_LLM_REDIS)
#include "shared_answers.hpp"
#endif

namespace {

struct options {
  std::string url;
  std::string model = "xcs-demo";
  int members = 4;
  long client_timeout_ms = 30000;
  std::optional<long> timeout_ms;  // xcs::timeout on the chat op
  std::uint32_t max_concurrency = 8;
  std::optional<double> rate;  // requests a second (xcs::rate_limiter)
  double burst = 5;
  unsigned retries = 0;
  long backoff_ms = 100;
  std::vector<std::string> questions;
  bool batch = false;
  bool explain = false;
  bool local_server = false;
  bool limited = false;  // the local server's rate-limited endpoint
  int delay_ms = 200;
  bool async = true;      // the async op on the multi client, or the blocking op
  std::string redis;      // --redis: the Redis every process shares
  std::size_t embed = 0;  // texts to embed (embed mode), or 0
  std::size_t max_batch = 100;
};

constexpr std::string_view usage = R"(usage: llm_pipeline [options]
  --url URL              chat-completions endpoint (default: $XCS_LLM_URL)
  --n N                  ensemble size (default 4)
  --max-concurrency K    requests in flight at once, 0 for no bound (default 8)
  --rate R               at most R requests a second on average (xcs::rate_limit), in bursts of
                         up to --burst B (default 5); default: no limit
  --retries N            send a request again up to N times after a 429, a 503 or a connection
                         failure (xcs::retry), after a random wait of up to MS, 2 MS, 4 MS, ...
                         (capped at 30 MS) for --backoff-ms MS (default 100); default 0
  --timeout-ms MS        each attempt of a request fails with xcs::timeout_error after
                         MS (xcs::timeout); default: none
  --client-timeout-ms MS the client's own timeout per request
                         (default 30000)
  --client KIND          async (default): requests on one event thread (libcurl multi) through
                         an xcs::async_op; blocking: one thread per request in flight
  --model NAME           the "model" field of each request (default xcs-demo)
  --question Q           the question (default: why is the sky blue?)
  --questions Q1 Q2 ...  batch mode over these questions
  --batch FILE           batch mode over FILE's non-empty lines
  --explain              print the plan of the jitted pipeline and exit
  --local-server         start nginx with nginx.conf.in and use it
  --limited              with --local-server: its endpoint behind nginx's rate limit (20
                         requests a second, bursts of 5 more, 429 beyond), which answers at once
  --delay-ms MS          the local server's reply delay (default 200)
  --redis URL            share with every process given the same URL (redis://host:port[/db]):
                         the --rate budget (xcs::redis_rate_limiter) and the answers, cached for
                         a day (xcs::redis_cache); each question is answered once between them
  --embed N              embed mode: N texts to an embeddings-style batch endpoint (--url, or
                         the local server's /v1/embed), directly, through a plain async op and
                         through a batched op of up to --max-batch M texts a request (100)
  $XCS_LLM_API_KEY, when set, is sent as a bearer token.
)";

[[noreturn]] void fail_usage(std::string_view message) {
  fmt::print(stderr, "llm_pipeline: {}\n{}", message, usage);
  std::exit(2);
}

template <class Int>
Int parse_int(std::string_view flag, std::string_view text, Int lowest) {
  Int value{};
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || value < lowest) {
    fail_usage(fmt::format("{} expects an integer >= {}, not '{}'", flag, lowest, text));
  }
  return value;
}

double parse_positive(std::string_view flag, std::string_view text) {
  double value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || !(value > 0) ||
      !std::isfinite(value)) {
    fail_usage(fmt::format("{} expects a number above 0, not '{}'", flag, text));
  }
  return value;
}

options parse_options(int argc, char** argv) {
  options o;
  if (const char* env = std::getenv("XCS_LLM_URL")) o.url = env;
  std::optional<std::string> question;
  for (int i = 1; i < argc; ++i) {
    std::string_view arg = argv[i];
    auto value = [&]() -> std::string_view {
      if (i + 1 >= argc) fail_usage(fmt::format("{} needs a value", arg));
      return argv[++i];
    };
    if (arg == "--url") {
      o.url = value();
    } else if (arg == "--n") {
      o.members = parse_int(arg, value(), 1);
    } else if (arg == "--timeout-ms") {
      o.timeout_ms = parse_int(arg, value(), 1L);
    } else if (arg == "--client-timeout-ms") {
      o.client_timeout_ms = parse_int(arg, value(), 1L);
    } else if (arg == "--max-concurrency") {
      o.max_concurrency = parse_int(arg, value(), std::uint32_t{0});
    } else if (arg == "--rate") {
      o.rate = parse_positive(arg, value());
    } else if (arg == "--burst") {
      o.burst = parse_int(arg, value(), 1);
    } else if (arg == "--retries") {
      o.retries = parse_int(arg, value(), 0U);
    } else if (arg == "--backoff-ms") {
      o.backoff_ms = parse_int(arg, value(), 0L);
    } else if (arg == "--client") {
      std::string_view kind = value();
      if (kind != "async" && kind != "blocking") {
        fail_usage(fmt::format("--client expects async or blocking, not '{}'", kind));
      }
      o.async = kind == "async";
    } else if (arg == "--model") {
      o.model = value();
    } else if (arg == "--question") {
      question = std::string(value());
    } else if (arg == "--questions") {
      o.batch = true;
      while (i + 1 < argc && std::string_view(argv[i + 1]).substr(0, 2) != "--") {
        o.questions.emplace_back(argv[++i]);
      }
    } else if (arg == "--batch") {
      o.batch = true;
      std::string path(value());
      std::ifstream in(path);
      if (!in) fail_usage("cannot read " + path);
      for (std::string line; std::getline(in, line);) {
        if (line.find_first_not_of(" \t\r") != std::string::npos) o.questions.push_back(line);
      }
    } else if (arg == "--explain") {
      o.explain = true;
    } else if (arg == "--local-server") {
      o.local_server = true;
    } else if (arg == "--limited") {
      o.limited = true;
    } else if (arg == "--delay-ms") {
      o.delay_ms = parse_int(arg, value(), 0);
    } else if (arg == "--redis") {
      o.redis = value();
#if !defined(XCS_LLM_REDIS)
      fail_usage("--redis needs the component xcs::redis, which this build lacks (hiredis)");
#endif
    } else if (arg == "--embed") {
      o.embed = parse_int(arg, value(), std::size_t{1});
    } else if (arg == "--max-batch") {
      o.max_batch = parse_int(arg, value(), std::size_t{1});
    } else if (arg == "--help" || arg == "-h") {
      fmt::print("{}", usage);
      std::exit(0);
    } else {
      fail_usage(fmt::format("unknown argument '{}'", arg));
    }
  }
  if (o.batch && o.questions.empty()) fail_usage("batch mode needs at least one question");
  if (o.retries > 1000)
    fail_usage(fmt::format("--retries expects at most 1000, not {}", o.retries));
  if (o.limited && !o.local_server) fail_usage("--limited needs --local-server");
  if (!o.batch)
    o.questions = {question.value_or("Why is the sky \"blue\"? Réponds en une phrase.")};
  if (o.url.empty() && !o.local_server && !o.explain) {
    fail_usage("no endpoint: pass --url, set XCS_LLM_URL, or use --local-server");
  }
  return o;
}

template <class Fn>
double millis(Fn&& fn) {
  auto t0 = std::chrono::steady_clock::now();
  fn();
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
}

void print_result(const std::string& question, const llm::pipeline_result& r) {
  fmt::print("question: {}\n", question);
  const auto& [answers, verdict, final_answer] = r;
  for (std::size_t i = 0; i < answers.size(); ++i) fmt::print("  answer {}: {}\n", i, answers[i]);
  fmt::print("  judge:    {}\n  final:    {}\n", verdict, final_answer);
}

std::unique_ptr<llm::local_server> start_local_server(const options& o) {
#if defined(XCS_LLM_NGINX) && defined(XCS_LLM_NGINX_TEMPLATE) && defined(XCS_LLM_ECHO_MODULE)
  llm::local_server_options s;
  s.nginx = XCS_LLM_NGINX;
  s.config_template = XCS_LLM_NGINX_TEMPLATE;
  s.echo_module = XCS_LLM_ECHO_MODULE;
  s.work_dir = std::filesystem::temp_directory_path() / "xcs-llm-pipeline";
  s.delay_ms = o.delay_ms;
  auto server = std::make_unique<llm::local_server>(s);
  fmt::print("local server: nginx on port {}, replies after {} ms, files in {}\n", server->port(),
             o.delay_ms, server->prefix().string());
  return server;
#else
  (void)o;
  fmt::print(stderr, "llm_pipeline: built without nginx or its echo module; use --url\n");
  std::exit(2);
#endif
}

// Stops the local server and removes its files: the logs are kept only when something went
// wrong.
void remove_local_server(llm::local_server& server) {
  std::filesystem::path prefix = server.prefix();
  server.stop();
  std::filesystem::remove_all(prefix);
}

llm::chat_policy chat_policy_of(const options& o) {
  llm::chat_policy p;
  p.max_concurrency = o.max_concurrency;
  if (o.rate) p.rate = xcs::rate_limiter(*o.rate, o.burst);
#if defined(XCS_LLM_REDIS)
  if (o.rate && !o.redis.empty())
    p.rate = llm::shared_rate_limiter(o.redis, o.url, *o.rate, o.burst);
#endif
  p.max_attempts = o.retries + 1;
  p.first_backoff = std::chrono::milliseconds(o.backoff_ms);
  if (o.timeout_ms) p.timeout = std::chrono::milliseconds(*o.timeout_ms);
  return p;
}

std::string describe_policy(const options& o) {
  std::string rate = o.rate ? fmt::format("{} a second, bursts of {}{}", *o.rate, o.burst,
                                          o.redis.empty() ? "" : " (shared in Redis)")
                            : "none";
  std::string timeout = o.timeout_ms ? fmt::format("{} ms", *o.timeout_ms) : "none";
  return fmt::format(
      "chat op: max_concurrency {}, rate limit {}, retries {} (backoff from {} ms), timeout {}",
      o.max_concurrency == 0 ? std::string("none") : std::to_string(o.max_concurrency), rate,
      o.retries, o.backoff_ms, timeout);
}

/// Whichever client the pipeline's requests go through, for its in-flight counters.
struct clients {
  llm::client* blocking;
  llm::async_client* async;
  void reset_peak() const { async ? async->reset_peak() : blocking->reset_peak(); }
  int peak_in_flight() const {
    return async ? async->peak_in_flight() : blocking->peak_in_flight();
  }
};

// Runs `body` directly, then jitted twice (the first call traces), and reports the times.
// Returns whether the three results agree.
template <class Body, class Arg>
bool compare(const char* mode, const Body& body, const Arg& arg, const options& o,
             const clients& api, llm::timeline& log, double one_call_ms) {
  auto jitted = xcs::jit(body);
  decltype(body(arg)) direct, first, cached;

  log.clear();
  double direct_ms = millis([&] { direct = body(arg); });
  double ensemble_direct_ms = log.span_ms("ensemble");

  log.clear();
  api.reset_peak();
  double first_ms = millis([&] { first = jitted(arg); });
  log.clear();
  double cached_ms = millis([&] { cached = jitted(arg); });
  double ensemble_jitted_ms = log.span_ms("ensemble");
  int peak = api.peak_in_flight();

  bool same = direct == first && direct == cached;
  if constexpr (std::is_same_v<Arg, std::string>) {
    print_result(arg, cached);
  } else {
    for (std::size_t i = 0; i < arg.size(); ++i) print_result(arg[i], cached[i]);
  }
  fmt::print("\none request:        {:7.1f} ms\n", one_call_ms);
  fmt::print("direct:             {:7.1f} ms  (ensemble stage {:6.1f} ms)\n", direct_ms,
             ensemble_direct_ms);
  fmt::print("jitted, first call: {:7.1f} ms  (traces, then runs the plan)\n", first_ms);
  fmt::print("jitted, cached:     {:7.1f} ms  (ensemble stage {:6.1f} ms)\n", cached_ms,
             ensemble_jitted_ms);
  fmt::print("speedup:            {:7.2f} x   (direct / jitted cached)\n", direct_ms / cached_ms);
  fmt::print("requests in flight: at most {} (bound {})\n", peak,
             o.max_concurrency == 0 ? std::string("none") : std::to_string(o.max_concurrency));
  const xcs::stats stats = jitted.stats();
  xcs::op_stats chat;  // both chat ops are named "llm"
  for (const xcs::op_stats& op : stats.ops) {
    if (op.name == "llm") chat = op;
  }
  const double rate_wait_ms = static_cast<double>(chat.rate_wait_ns) / 1e6;
  fmt::print(
      "chat op, jitted calls: {} attempts, {} retries, {} timeouts, {:.1f} ms waited for "
      "rate-limit tokens (summed over requests)\n",
      chat.calls, chat.retries, chat.timeouts, rate_wait_ms);
  fmt::print("same result: {}\n\n{}\n", same ? "yes" : "NO", stats);
  // One line for scripts and tests.
  fmt::print(
      "summary: mode={} client={} questions={} members={} one_call_ms={:.1f} direct_ms={:.1f} "
      "jitted_first_ms={:.1f} jitted_ms={:.1f} ensemble_direct_ms={:.1f} "
      "ensemble_jitted_ms={:.1f} peak_in_flight={} retries={} timeouts={} rate_wait_ms={:.1f} "
      "same={}\n",
      mode, o.async ? "async" : "blocking", o.questions.size(), o.members, one_call_ms, direct_ms,
      first_ms, cached_ms, ensemble_direct_ms, ensemble_jitted_ms, peak, chat.retries,
      chat.timeouts, rate_wait_ms, same ? "yes" : "no");
  return same;
}

#if defined(XCS_LLM_REDIS)
/// --redis: each question once, through the answer cache every process shares.
int run_shared(const options& o, const llm::ensemble_pipeline& one, const llm::timeline& log) {
  fmt::print("answers shared through Redis at {}\n\n", o.redis);
  const llm::shared_run r = llm::answer_shared(o.redis, one, o.questions, o.model, &print_result);
  const std::size_t requests = log.count("ensemble") + log.count("judge") + log.count("synthesis");
  fmt::print("\nsummary: mode=redis questions={} computed={} cached={} bypassed={} requests={}\n",
             o.questions.size(), r.computed, r.cached, r.bypassed, requests);
  return 0;
}
#endif

}  // namespace

int main(int argc, char** argv) {
  options o = parse_options(argc, argv);
  llm::curl_session curl;
  std::unique_ptr<llm::local_server> server;
  try {
    if (o.local_server) {
      server = start_local_server(o);
      o.url = o.limited ? server->limited_url() : server->chat_url();
      if (o.embed != 0) o.url = server->embed_url();
    }
    llm::client_options co;
    co.url = o.url;
    co.model = o.model;
    co.timeout_ms = o.client_timeout_ms;
    if (const char* key = std::getenv("XCS_LLM_API_KEY")) co.api_key = key;
    if (o.embed != 0) {
      llm::async_client embed_api(co);
      const bool same = llm::run_embed_demo(embed_api, o.url, o.embed, o.max_batch, server.get());
      if (server && same) remove_local_server(*server);
      return same ? 0 : 1;
    }
    llm::client api(co);
    std::optional<llm::async_client> async_api;
    if (o.async) async_api.emplace(co);
    const clients in_use{&api, async_api ? &*async_api : nullptr};
    llm::timeline log;
    llm::pipeline_ops ops(api, log, o.members, chat_policy_of(o), in_use.async);
    llm::ensemble_pipeline one{&ops};
    llm::batch_pipeline batch{one};

    if (o.explain) {
      if (o.batch) {
        fmt::print("{}", xcs::jit(batch).explain(o.questions));
      } else {
        fmt::print("{}", xcs::jit(one).explain(o.questions.front()));
      }
      return 0;
    }

    fmt::print("endpoint: {}\nensemble of {}, client timeout {} ms, {} client\n{}\n\n", o.url,
               o.members, o.client_timeout_ms, o.async ? "async (one event thread)" : "blocking",
               describe_policy(o));
#if defined(XCS_LLM_REDIS)
    if (!o.redis.empty()) return run_shared(o, one, log);
#endif
    // One request on its own: the latency the ensemble stage should take when jitted. It also
    // checks that the endpoint answers before the pipeline starts.
    double one_call_ms = millis([&] { ops.chat(llm::member_prompt(o.questions.front(), 0, 1)); });

    bool same = o.batch ? compare("batch", batch, o.questions, o, in_use, log, one_call_ms)
                        : compare("single", one, o.questions.front(), o, in_use, log, one_call_ms);
    if (server && same) remove_local_server(*server);
    return same ? 0 : 1;
  } catch (const llm::llm_error& e) {
    fmt::print(stderr, "llm_pipeline: {} error: {}\n", llm::to_string(e.kind()), e.what());
    return 3;
  } catch (const std::exception& e) {
    fmt::print(stderr, "llm_pipeline: {}\n", e.what());
    return 3;
  }
}
