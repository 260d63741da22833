// SPDX-License-Identifier: MIT
// The embed mode: the same body over three ops, timed, with the requests each sent.
#include "embed_demo.hpp"

#include <fmt/format.h>
#include <xcs/xcs.hpp>

#include <stdlib.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <vector>

#include "embed.hpp"

namespace llm {
namespace {

struct way {
  std::string name;
  std::vector<std::string> vectors;
  double ms = 0;
  std::uint64_t requests = 0;  // as the client counted them
  std::size_t logged = 0;      // as the server logged them (0 without a local server)
};

std::size_t logged_embeds(const local_server* server) {
  if (server == nullptr) return 0;
  const std::vector<access_entry> log = server->access_log();
  return static_cast<std::size_t>(std::count_if(log.begin(), log.end(), [](const access_entry& e) {
    return e.uri == local_server::embed_path;
  }));
}

template <class Fn>
way measure(std::string name, const Fn& fn, const std::vector<std::string>& texts,
            const async_client& api, const local_server* server) {
  way w;
  w.name = std::move(name);
  const std::uint64_t requests_before = api.requests();
  const std::size_t logged_before = logged_embeds(server);
  const auto t0 = std::chrono::steady_clock::now();
  w.vectors = fn(texts);
  w.ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  w.requests = api.requests() - requests_before;
  w.logged = logged_embeds(server) - logged_before;
  return w;
}

// The body: one embedding per text. `embed` is an op of one text.
template <class Embed>
auto embed_each(const Embed& embed) {
  return [embed](const auto& texts) { return xcs::map(embed, texts); };
}

}  // namespace

bool run_embed_demo(async_client& api, const std::string& url, std::size_t n, std::size_t max_batch,
                    const local_server* server) {
  const std::vector<std::string> texts = embed_texts(n);
  auto one = xcs::async_op("embed", embed_one_fn{&api, url});
  std::vector<way> ways;
  ways.push_back(measure("direct call", embed_each(one), texts, api, server));
  auto plain = xcs::jit(embed_each(one));
  plain(texts);  // traces; the timed call runs the cached plan
  ways.push_back(measure("jitted, plain async op", plain, texts, api, server));
  auto batch = xcs::batch_op("embed", embed_batch_fn{&api, url}, xcs::max_batch(max_batch));
  auto batched = xcs::jit(embed_each(batch));
  batched(texts);
  ways.push_back(
      measure(fmt::format("jitted, xcs::batch_op ({})", max_batch), batched, texts, api, server));
  const std::size_t want_requests = (n + max_batch - 1) / max_batch;

  fmt::print("endpoint: {}\n{} texts\n\n", url, n);
  bool same = true;
  for (const way& w : ways) {
    fmt::print("{:<26} {:8.1f} ms  {:5} requests{}\n", w.name, w.ms, w.requests,
               server != nullptr ? fmt::format(" ({} in the server's access log)", w.logged)
                                 : std::string());
    same = same && w.vectors == ways.front().vectors;
  }
  const bool echoed = server == nullptr || ways.front().vectors == texts;
  const bool counted = ways[2].requests == want_requests;
  double load[3] = {};
  const double load1 = ::getloadavg(load, 3) > 0 ? load[0] : -1.0;
  fmt::print(
      "\nsame results: {}{}; batched requests: {} (ceil({} / {}) = {}); load average {:.2f}\n",
      same ? "yes" : "NO", echoed ? "" : " (the local server did not echo the texts)",
      ways[2].requests, n, max_batch, want_requests, load1);
  fmt::print(
      "summary: texts={} max_batch={} direct_ms={:.1f} direct_requests={} "
      "jitted_ms={:.1f} jitted_requests={} batched_ms={:.1f} batched_requests={} "
      "expected_batched_requests={} same={} load={:.2f}\n",
      n, max_batch, ways[0].ms, ways[0].requests, ways[1].ms, ways[1].requests, ways[2].ms,
      ways[2].requests, want_requests, same && echoed ? "yes" : "no", load1);
  return same && echoed && counted;
}

}  // namespace llm
