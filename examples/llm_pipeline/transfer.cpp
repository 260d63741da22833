// SPDX-License-Identifier: MIT
// A request's easy handle and the one mapping from its end to a reply or an llm_error.
#include "transfer.hpp"

#include <cctype>
#include <cstddef>
#include <optional>
#include <string_view>
#include <utility>

namespace llm {
namespace {

// Responses beyond this are an error, not an out-of-memory.
constexpr std::size_t max_response_bytes = 16u << 20;

std::size_t append_response(char* data, std::size_t size, std::size_t count, void* user) {
  auto* out = static_cast<std::string*>(user);
  std::size_t n = size * count;
  if (out->size() + n > max_response_bytes) return 0;  // curl fails with CURLE_WRITE_ERROR
  out->append(data, n);
  return n;
}

// The start of a body for an error message: bounded, and on one line.
std::string excerpt(std::string_view body) {
  std::string out(body.substr(0, 200));
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!out.empty() && out.back() == ' ') out.pop_back();
  if (body.size() > 200) out += "...";
  return out;
}

// curl's detail without its " after 12 ms": the message of a failure must not depend on
// timing, so that the same failure gives the same message on every path.
std::string without_timings(std::string detail) {
  static constexpr std::string_view after = " after ";
  for (std::size_t at = detail.find(after); at != std::string::npos;
       at = detail.find(after, at + 1)) {
    std::size_t end = at + after.size();
    while (end < detail.size() && std::isdigit(static_cast<unsigned char>(detail[end]))) ++end;
    if (end > at + after.size() && detail.compare(end, 3, " ms") == 0) {
      detail.erase(at, end + 3 - at);
    }
  }
  return detail;
}

}  // namespace

transfer::transfer(const client_options& options, std::string url, const std::string& prompt)
    : url_(std::move(url)),
      timeout_ms_(options.timeout_ms),
      body_(request_body(options.model, prompt)) {
  set_up(options);
}

transfer::transfer(raw_json_t, const client_options& options, std::string url, std::string body)
    : url_(std::move(url)), timeout_ms_(options.timeout_ms), body_(std::move(body)), raw_(true) {
  set_up(options);
}

void transfer::set_up(const client_options& options) {
  handle_.reset(curl_easy_init());
  if (!handle_) {
    throw llm_error(failure::transport, 0,
                    "llm request to " + url_ + " failed: curl_easy_init failed");
  }
  curl_slist* raw_headers = curl_slist_append(nullptr, "Content-Type: application/json");
  // Without this curl sends "Expect: 100-continue" for bodies over 1 KiB and waits a round
  // trip (or a second) for the server's go-ahead.
  raw_headers = curl_slist_append(raw_headers, "Expect:");
  if (!options.api_key.empty()) {
    auth_ = "Authorization: Bearer " + options.api_key;
    raw_headers = curl_slist_append(raw_headers, auth_.c_str());
  }
  headers_.reset(raw_headers);

  CURL* h = handle_.get();
  curl_easy_setopt(h, CURLOPT_URL, url_.c_str());
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body_.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body_.size()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers_.get());
  curl_easy_setopt(h, CURLOPT_USERAGENT, "xcs-llm-pipeline/0.1");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &append_response);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &response_);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, timeout_ms_);
  // Timeouts must not use signals: blocking requests run on many threads at once.
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, detail_);
}

void transfer::close() noexcept {
  if (!handle_) return;
  curl_easy_getinfo(handle_.get(), CURLINFO_RESPONSE_CODE, &status_);
  handle_.reset();
}

llm_error transfer::cancelled(const std::string& url) {
  return llm_error(failure::cancelled, 0, "llm request to " + url + " was cancelled");
}

std::string transfer::reply(CURLcode rc) const {
  const std::string where = "llm request to " + url_;
  // Only the blocking client's progress callback aborts a transfer, and only on a stop.
  if (rc == CURLE_ABORTED_BY_CALLBACK) throw cancelled(url_);
  if (rc == CURLE_OPERATION_TIMEDOUT) {
    throw llm_error(failure::timeout, 0,
                    where + " timed out after " + std::to_string(timeout_ms_) + " ms");
  }
  if (rc != CURLE_OK) {
    std::string message = where + " failed: " + curl_easy_strerror(rc);
    if (detail_[0] != '\0') message += " (" + without_timings(detail_) + ")";
    throw llm_error(failure::transport, 0, message);
  }
  if (status_ < 200 || status_ > 299) {
    std::optional<std::string> server_says = error_message(response_);
    throw llm_error(failure::http_status, status_,
                    where + " failed with HTTP " + std::to_string(status_) + ": " +
                        (server_says ? *server_says : excerpt(response_)));
  }
  if (raw_) return response_;
  std::optional<std::string> content = reply_content(response_);
  if (!content) {
    throw llm_error(
        failure::bad_response, status_,
        where + ": the response has no choices[0].message.content string: " + excerpt(response_));
  }
  return std::move(*content);
}

std::exception_ptr transfer::outcome(CURLcode rc, std::string& text) const noexcept {
  try {
    text = reply(rc);
    return nullptr;
  } catch (...) {
    return std::current_exception();
  }
}

}  // namespace llm
