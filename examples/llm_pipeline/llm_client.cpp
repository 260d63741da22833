// SPDX-License-Identifier: MIT
// The blocking chat-completions client, and the request and reply JSON (nlohmann/json).
#include "llm_client.hpp"

#include <curl/curl.h>

#include <nlohmann/json.hpp>

#include <utility>

#include "transfer.hpp"

namespace llm {
namespace {

using nlohmann::json;

// The string at `pointer` (RFC 6901) in `doc`, if there is one there.
std::optional<std::string> string_at(std::string_view text, const char* pointer) {
  // No exceptions: a body that is not JSON is an answer (nullopt), not an error.
  json doc = json::parse(text, /*cb=*/nullptr, /*allow_exceptions=*/false);
  const json::json_pointer at(pointer);
  if (doc.is_discarded() || !doc.contains(at)) return std::nullopt;
  const json& value = doc.at(at);
  if (!value.is_string()) return std::nullopt;
  return value.get<std::string>();
}

// Counts a request as in flight from before curl_easy_perform until its handle is cleaned up,
// which closes its connection.
class in_flight_guard {
 public:
  in_flight_guard(std::atomic<int>& in_flight, std::atomic<int>& peak) : in_flight_(in_flight) {
    int now = in_flight_.fetch_add(1, std::memory_order_relaxed) + 1;
    int seen = peak.load(std::memory_order_relaxed);
    while (now > seen && !peak.compare_exchange_weak(seen, now, std::memory_order_relaxed)) {
    }
  }
  ~in_flight_guard() { in_flight_.fetch_sub(1, std::memory_order_relaxed); }
  in_flight_guard(const in_flight_guard&) = delete;
  in_flight_guard& operator=(const in_flight_guard&) = delete;

 private:
  std::atomic<int>& in_flight_;
};

}  // namespace

std::string_view to_string(failure kind) noexcept {
  switch (kind) {
    case failure::transport:
      return "transport";
    case failure::timeout:
      return "timeout";
    case failure::http_status:
      return "http_status";
    case failure::bad_response:
      return "bad_response";
  }
  return "unknown";
}

curl_session::curl_session() {
  if (CURLcode rc = curl_global_init(CURL_GLOBAL_DEFAULT); rc != CURLE_OK) {
    throw std::runtime_error(std::string("curl_global_init failed: ") + curl_easy_strerror(rc));
  }
}
curl_session::~curl_session() { curl_global_cleanup(); }

std::string request_body(std::string_view model, std::string_view prompt) {
  // ordered_json keeps the members in the order the API documents them.
  using ordered = nlohmann::ordered_json;
  ordered message = ordered::object({{"role", "user"}, {"content", prompt}});
  ordered body = ordered::object({{"model", model}, {"messages", ordered::array({message})}});
  // Bytes that are not UTF-8 become U+FFFD: the body must be valid JSON whatever the prompt.
  return body.dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

std::optional<std::string> reply_content(std::string_view body) {
  return string_at(body, "/choices/0/message/content");
}

std::optional<std::string> error_message(std::string_view body) {
  return string_at(body, "/error/message");
}

std::string client::complete(const std::string& url, const std::string& prompt) const {
  transfer request(options_, url, prompt);
  CURLcode rc;
  {
    in_flight_guard guard(in_flight_, peak_);
    requests_.fetch_add(1, std::memory_order_relaxed);
    rc = curl_easy_perform(request.handle());
    request.close();  // closes the connection while the request still counts as in flight
  }
  return request.reply(rc);
}

}  // namespace llm
