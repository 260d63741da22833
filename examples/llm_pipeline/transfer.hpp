// SPDX-License-Identifier: MIT
// One chat-completions request (or a JSON POST to another endpoint of the same API) as a CURL
// easy handle, and how its end becomes a reply or an llm_error; shared by the blocking client
// and the async (multi) client, so both report a failure with the same error.
#pragma once

#include <curl/curl.h>

#include <memory>
#include <string>

#include "llm_client.hpp"

namespace llm {

/// Selects the transfer that POSTs a JSON body as given and whose reply is the whole response
/// body, for endpoints other than chat completions (the embeddings-style /v1/embed).
struct raw_json_t {
  explicit raw_json_t() = default;
};
inline constexpr raw_json_t raw_json{};

/// A request ready to run: the easy handle with every option set, and the buffers it points
/// into. Not movable: curl holds pointers to its members.
class transfer {
 public:
  /// Throws llm_error (transport) if curl cannot make a handle.
  transfer(const client_options& options, std::string url, const std::string& prompt);
  /// POSTs `body` as it is; `reply` returns the response body of a 2xx answer, unparsed.
  transfer(raw_json_t, const client_options& options, std::string url, std::string body);
  transfer(const transfer&) = delete;
  transfer& operator=(const transfer&) = delete;

  CURL* handle() const noexcept { return handle_.get(); }
  const std::string& url() const noexcept { return url_; }

  /// Records the HTTP status and cleans the handle up, which closes its connection unless a
  /// multi handle keeps it for reuse. Call once the request is over (and, in a multi handle,
  /// removed from it).
  void close() noexcept;

  /// What the request came to, given curl's result: choices[0].message.content (the whole
  /// body for a raw_json transfer), or throws the llm_error for the failure. Call after close().
  std::string reply(CURLcode rc) const;

  /// The same, as an exception_ptr (null on success) and the text, without throwing.
  std::exception_ptr outcome(CURLcode rc, std::string& text) const noexcept;

  /// The llm_error (`failure::cancelled`) of a request to `url` that its caller's stop token
  /// ended: the same on both clients, however far the request had got.
  static llm_error cancelled(const std::string& url);

 private:
  void set_up(const client_options& options);

  std::string url_;
  long timeout_ms_;
  std::string body_;
  bool raw_ = false;  // the reply is the whole body, not choices[0].message.content
  std::string auth_;
  std::string response_;
  long status_ = 0;
  char detail_[CURL_ERROR_SIZE] = {};
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers_{nullptr,
                                                                       &curl_slist_free_all};
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> handle_{nullptr, &curl_easy_cleanup};
};

}  // namespace llm
