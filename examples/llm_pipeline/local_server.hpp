// SPDX-License-Identifier: MIT
// A local nginx that plays an OpenAI-style endpoint (nginx.conf.in), started and stopped by a
// test or the demo, with its counters and access log for measuring concurrency at the server.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace llm {

/// nginx's own rate limit on /v1/limited/chat/completions (limit_req with nodelay), one bucket
/// for all clients: `limited_rate_per_second` requests a second on average, and up to
/// `limited_burst` more at once; a request beyond that is rejected at once with 429.
inline constexpr int limited_rate_per_second = 20;
inline constexpr int limited_burst = 5;

struct local_server_options {
  std::string nginx;               ///< the nginx executable
  std::string config_template;     ///< nginx.conf.in
  std::string echo_module;         ///< ngx_http_echo_module.so
  std::filesystem::path work_dir;  ///< the server's prefix directory is made under it
  int delay_ms = 200;              ///< how long /v1/chat/completions takes
  int slow_ms = 3000;              ///< how long /v1/slow/chat/completions takes
};

/// nginx's stub_status counters. `writing` counts requests being processed, including the
/// status request itself; `active` counts open connections, idle keep-alive ones included.
struct server_status {
  int active = -1;
  int reading = -1;
  int writing = -1;
  int waiting = -1;
  std::uint64_t requests = 0;
};

/// One line of the access log: when the request ended and how long it took, in milliseconds of
/// nginx's clock (which both come from, so end - duration is exactly when the request started).
struct access_entry {
  std::int64_t end_ms = 0;
  std::int64_t duration_ms = 0;
  int status = 0;
  std::string uri;
};

/// nginx as a child process, in the foreground and in one process (master_process off), on a
/// free loopback port, with its config, pid file, logs and temp files under its own prefix.
/// The constructor returns once the server answers; the destructor stops it. If the parent
/// dies first, the kernel kills nginx (PR_SET_PDEATHSIG), so no server outlives a crashed test.
class local_server {
 public:
  /// Starts nginx; throws std::runtime_error with nginx's error log if it does not come up.
  explicit local_server(local_server_options options);
  ~local_server();
  local_server(const local_server&) = delete;
  local_server& operator=(const local_server&) = delete;

  int port() const noexcept { return port_; }
  /// "http://127.0.0.1:<port>" followed by `path`.
  std::string url(std::string_view path) const;
  /// The chat-completions endpoint: the canned reply after `delay_ms`.
  std::string chat_url() const { return url("/v1/chat/completions"); }
  /// The same reply at once, behind nginx's rate limit (`limited_rate_per_second`,
  /// `limited_burst`); over it, 429 with an OpenAI-style error body.
  std::string limited_url() const { return url(limited_path); }
  static constexpr std::string_view limited_path = "/v1/limited/chat/completions";
  /// An endpoint that never answers: a request to it ends only when its client gives up, and
  /// the access log shows status 499 for it once the client has closed the connection.
  std::string hung_url() const { return url(hung_path); }
  static constexpr std::string_view hung_path = "/v1/hung/chat/completions";
  /// The embeddings-style batch endpoint: POST a JSON array of texts; the reply's data array
  /// echoes them back, one entry per text (embed.hpp).
  std::string embed_url() const { return url(embed_path); }
  static constexpr std::string_view embed_path = "/v1/embed";
  const std::filesystem::path& prefix() const noexcept { return prefix_; }

  /// GET /nginx_status on a new connection. Throws std::runtime_error if it fails.
  server_status status() const;
  /// The access log so far, oldest first.
  std::vector<access_entry> access_log() const;
  /// Stops nginx (SIGTERM, then SIGKILL after 3 s). Idempotent.
  void stop();

 private:
  bool start_on(int port, std::string& why);

  local_server_options options_;
  std::filesystem::path prefix_;
  int port_ = 0;
  pid_t pid_ = -1;
};

/// The stub_status page parsed; fields it lacks stay -1.
server_status parse_status(std::string_view page);

/// The most requests for `uri` that were in flight at once, from their intervals in the
/// access log. Intervals are half-open: one that ends in the millisecond another starts in
/// does not overlap it.
int max_overlap(const std::vector<access_entry>& log, std::string_view uri);

/// A loopback TCP port that was free a moment ago (the kernel's pick for port 0).
int pick_free_port();

}  // namespace llm
