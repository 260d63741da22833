// SPDX-License-Identifier: MIT
// An asynchronous chat-completions client on libcurl's multi interface: one event thread
// runs every request in flight, and each request completes through a callback.
#pragma once

#include <curl/curl.h>

#include <atomic>
#include <cstdint>
#include <deque>
#include <exception>
#include <memory>
#include <mutex>
#include <stop_token>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "llm_client.hpp"

namespace llm {

/// How one request ended: the reply's text, or the exception (an `llm_error`) that
/// `client::complete` throws for the same failure.
struct reply_or_error {
  std::string text;          ///< choices[0].message.content, when `error` is null
  std::exception_ptr error;  ///< the failure, or null

  /// The text, or rethrows the error.
  std::string value() && {
    if (error) std::rethrow_exception(error);
    return std::move(text);
  }
};

/// A move-only callable taking a `reply_or_error` (std::move_only_function is C++23), so that
/// a callback may own a move-only completion such as `xcs::completion<std::string>`.
class reply_callback {
 public:
  reply_callback() = default;
  template <class Fn>
  reply_callback(Fn fn) : impl_(std::make_unique<model<Fn>>(std::move(fn))) {}  // NOLINT
  explicit operator bool() const noexcept { return impl_ != nullptr; }
  void operator()(reply_or_error r) { impl_->call(std::move(r)); }

 private:
  struct concept_ {
    virtual ~concept_() = default;
    virtual void call(reply_or_error r) = 0;
  };
  template <class Fn>
  struct model final : concept_ {
    explicit model(Fn f) : fn(std::move(f)) {}
    void call(reply_or_error r) override { fn(std::move(r)); }
    Fn fn;
  };
  std::unique_ptr<concept_> impl_;
};

/// Sends chat-completions requests without a thread per request: `start` queues a request
/// from any thread and returns at once; one event thread runs every request in flight over
/// one multi handle, which reuses connections, and calls each request's callback when it
/// ends. The event thread waits in epoll on curl's sockets and an eventfd that `start` writes
/// to, and drives curl with curl_multi_socket_action: the work per event is that of the
/// sockets that are ready, where curl_multi_perform would visit every request in flight.
///
/// A failure reaches the callback as the same `llm_error` (kind, status, message) that
/// `client::complete` throws for it: both clients build their requests and read their ends
/// with the same code (transfer.hpp).
///
/// A request started with a stop token ends when a stop is requested on it: the event thread
/// takes the request out of the multi handle, which closes its connection, and calls its
/// callback with `failure::cancelled`, within a few milliseconds of the stop when the event
/// thread is free. Whatever races (the stop, the reply, the client's destruction), the callback
/// runs exactly once, with whichever came first to the event thread.
///
///     llm::async_client api({.url = "http://127.0.0.1:8080/v1/chat/completions"});
///     api.start("Why is the sky blue?", [](llm::reply_or_error r) {
///       if (!r.error) std::puts(r.text.c_str());
///     });
///
/// Thread-safe. `curl_global_init` must have been called first (see `curl_session`).
class async_client {
 public:
  /// Starts the event thread. Throws std::runtime_error if curl or the thread cannot start.
  /// Up to `max_idle_connections` connections stay open for reuse when their requests end
  /// (CURLMOPT_MAXCONNECTS; curl's default would close most of them as a burst drains).
  explicit async_client(client_options options, long max_idle_connections = 1024);
  /// Stops the event thread after failing every request not yet ended with an llm_error
  /// (transport, "the client was destroyed"), so that every callback runs exactly once.
  ~async_client();
  async_client(const async_client&) = delete;
  async_client& operator=(const async_client&) = delete;

  /// Queues a request of `prompt` to the client's URL; `done` runs once, when it ends, on
  /// the event thread. `done` must not block (every other request waits while it runs) and
  /// must not throw (std::terminate). If the request cannot be made at all (curl_easy_init
  /// failed), `done` runs before `start` returns, on the calling thread, with the llm_error
  /// the blocking client throws for it. A stop requested on `stop` before the request ends
  /// ends it with `failure::cancelled` (a token stopped already sends nothing); `stop` may be
  /// stopped from any thread, a callback of this client's included.
  void start(const std::string& prompt, reply_callback done, std::stop_token stop = {}) {
    start(options_.url, prompt, std::move(done), std::move(stop));
  }
  /// The same, to another URL of the same API.
  void start(std::string url, const std::string& prompt, reply_callback done,
             std::stop_token stop = {});

  /// POSTs `body` (JSON) as it is to `url`, another endpoint of the same API; `done` gets the
  /// response body of a 2xx answer, unparsed, or the llm_error `start` would give. Otherwise
  /// as `start`.
  void post(std::string url, std::string body, reply_callback done, std::stop_token stop = {});

  /// Sends a request and waits for it: returns the text or throws the llm_error, as
  /// `client::complete` does. Not from a callback (the event thread would wait for itself).
  std::string complete(const std::string& prompt) { return complete(options_.url, prompt); }
  std::string complete(std::string url, const std::string& prompt, std::stop_token stop = {});

  const client_options& options() const noexcept { return options_; }

  /// Requests running in the multi handle right now (queued ones excluded), and the most there
  /// ever were at once.
  int in_flight() const noexcept { return in_flight_.load(std::memory_order_relaxed); }
  int peak_in_flight() const noexcept { return peak_.load(std::memory_order_relaxed); }
  std::uint64_t requests() const noexcept { return requests_.load(std::memory_order_relaxed); }
  void reset_peak() noexcept { peak_.store(in_flight(), std::memory_order_relaxed); }

 private:
  struct pending;  // one request: its transfer, its callback and its stop callback
  using queue = std::deque<std::unique_ptr<pending>>;
  static int on_socket(CURL* easy, curl_socket_t socket, int what, void* self, void* known);
  static int on_timer(CURLM* multi, long timeout_ms, void* self);
  void enqueue(std::unique_ptr<pending> request, const std::stop_token& stop);
  void run() noexcept;
  int wait_ms() const noexcept;
  bool take_queued() noexcept;
  void add(queue& batch) noexcept;
  void act(curl_socket_t socket, int events) noexcept;
  void finish(CURL* handle, CURLcode rc) noexcept;
  void post_cancel(std::uint64_t id) noexcept;
  void cancel(std::uint64_t id) noexcept;
  void fail_all() noexcept;

  client_options options_;
  // The event thread's state. The constructor and destructor touch it too, before the thread
  // starts and after it ends; other threads only write to wake_fd_.
  CURLM* multi_ = nullptr;
  int epoll_fd_ = -1;  // curl's sockets, and wake_fd_
  int wake_fd_ = -1;   // an eventfd: start(), stop callbacks and the destructor write to it
  std::int64_t timer_due_ns_ = -1;  // curl's timer on the steady clock, or -1 for none
  // In multi_, by id; owned through their CURLOPT_PRIVATE. An id, not the address, names a
  // request to cancel: a cancel may arrive after its request ended and another took its place.
  std::unordered_map<std::uint64_t, pending*> running_;

  // Guards queue_, cancels_ and stopping_. Held only to move requests and ids in and out,
  // never while a request's stop callback is destroyed: that destructor waits for a stop
  // callback running on another thread, which takes this lock to post its cancel.
  std::mutex mutex_;
  queue queue_;
  std::vector<std::uint64_t> cancels_;  // ids whose stop was requested, for the event thread
  bool stopping_ = false;

  std::atomic<std::uint64_t> next_id_{0};  // only unique: relaxed

  // Counters only; relaxed order is enough because nothing is published through them.
  std::atomic<int> in_flight_{0};
  std::atomic<int> peak_{0};
  std::atomic<std::uint64_t> requests_{0};

  std::thread thread_;  // last: it starts running in the constructor
};

}  // namespace llm
