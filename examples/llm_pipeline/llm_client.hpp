// SPDX-License-Identifier: MIT
// A minimal client for OpenAI-style chat-completions endpoints, over libcurl.
#pragma once

#include <atomic>
#include <cstdint>
#include <optional>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <string_view>

namespace llm {

/// How a request failed.
enum class failure {
  transport,     ///< no HTTP answer: connection refused, reset, DNS, ...
  timeout,       ///< no complete answer within the client's timeout
  http_status,   ///< the server answered with a 4xx or 5xx status
  bad_response,  ///< a 2xx answer without choices[0].message.content
  cancelled,     ///< the caller's stop token asked the request to stop before it ended
};

/// Thrown by `client::complete` for every failed request. The message names the URL and the
/// cause, and is the same for the same failure (no timings, no per-request ids in it).
class llm_error : public std::runtime_error {
 public:
  llm_error(failure kind, long status, const std::string& message)
      : std::runtime_error(message), kind_(kind), status_(status) {}

  failure kind() const noexcept { return kind_; }
  /// The HTTP status, or 0 when there was no HTTP answer.
  long status() const noexcept { return status_; }

 private:
  failure kind_;
  long status_;
};

std::string_view to_string(failure kind) noexcept;

struct client_options {
  std::string url;  ///< full endpoint URL, e.g. http://127.0.0.1:8080/v1/chat/completions
  std::string model = "xcs-demo";
  long timeout_ms = 30000;  ///< per request, connect to last byte
  std::string api_key;      ///< sent as "Authorization: Bearer ..." when not empty
};

/// Sends one user message per request and returns the reply's text. Each request uses its own
/// CURL easy handle (one connection), so a client may be used from many threads at once.
/// `curl_global_init` must have been called before the first request (see `curl_session`).
class client {
 public:
  explicit client(client_options options) : options_(std::move(options)) {}

  /// POSTs `prompt` as the one user message to the client's URL and returns
  /// choices[0].message.content. Throws `llm_error`. Thread-safe.
  std::string complete(const std::string& prompt) const { return complete(options_.url, prompt); }
  /// The same, to another URL of the same API.
  std::string complete(const std::string& url, const std::string& prompt) const {
    return complete(url, prompt, std::stop_token{});
  }
  /// The same, and a stop requested on `stop` ends the request within a few milliseconds,
  /// wherever it is (connecting, sending, waiting for the reply), closing its connection; it
  /// then throws `llm_error` with `failure::cancelled`. A token stopped already sends nothing.
  ///
  ///     std::stop_source source;
  ///     std::jthread watchdog([&] { std::this_thread::sleep_for(1s); source.request_stop(); });
  ///     api.complete(url, "Why?", source.get_token());  // at most about a second
  std::string complete(const std::string& url, const std::string& prompt,
                       std::stop_token stop) const;

  const client_options& options() const noexcept { return options_; }

  /// Requests in flight right now, and the most there ever were at once (counted around
  /// curl_easy_perform: a connection is open for about that long).
  int in_flight() const noexcept { return in_flight_.load(); }
  int peak_in_flight() const noexcept { return peak_.load(); }
  std::uint64_t requests() const noexcept { return requests_.load(); }
  void reset_peak() const noexcept { peak_.store(in_flight_.load()); }

 private:
  client_options options_;
  // Counters only; relaxed order is enough because nothing else is published through them.
  mutable std::atomic<int> in_flight_{0};
  mutable std::atomic<int> peak_{0};
  mutable std::atomic<std::uint64_t> requests_{0};
};

/// curl_global_init / curl_global_cleanup for the lifetime of the object; make one in main,
/// before any thread sends a request.
class curl_session {
 public:
  curl_session();
  ~curl_session();
  curl_session(const curl_session&) = delete;
  curl_session& operator=(const curl_session&) = delete;
};

/// The request body: {"model": ..., "messages": [{"role": "user", "content": ...}]}, with
/// bytes of `prompt` that are not UTF-8 replaced by U+FFFD.
std::string request_body(std::string_view model, std::string_view prompt);

/// choices[0].message.content of a chat-completions response, decoded; nullopt if the body is
/// not JSON (nlohmann/json's parser: RFC 8259, and a \u escape must be a whole code point) or
/// has no such string.
std::optional<std::string> reply_content(std::string_view body);

/// error.message of an OpenAI-style error body, decoded; nullopt if there is none.
std::optional<std::string> error_message(std::string_view body);

}  // namespace llm
