// SPDX-License-Identifier: MIT
// The blocking chat-completions client, and the request and reply JSON (nlohmann/json).
#include "llm_client.hpp"

#include <curl/curl.h>

#include <nlohmann/json.hpp>

#include <memory>
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

// CURLOPT_XFERINFOFUNCTION: a nonzero return aborts the transfer with
// CURLE_ABORTED_BY_CALLBACK, which transfer::reply reads as cancelled.
int abort_on_stop(void* stop, curl_off_t, curl_off_t, curl_off_t, curl_off_t) {
  return static_cast<const std::stop_token*>(stop)->stop_requested() ? 1 : 0;
}

// Runs `easy` to its end, as curl_easy_perform does, but on a multi handle of its own so that
// a stop can wake the wait. curl calls the progress callback whenever it drives the transfer,
// and a transfer waiting on a silent server is driven only by curl's timers: inside
// curl_easy_perform (curl 7.88) that is at 200 ms, then once a second (measured), so a stop
// would take up to a second to land. Here the stop callback interrupts curl_multi_poll with
// curl_multi_wakeup (the one call curl allows on a multi handle another thread is using), the
// next curl_multi_perform calls the progress callback, and it aborts: the request ends within
// a few milliseconds of the stop, whether it was connecting, sending or waiting.
CURLcode perform(CURL* easy, const std::stop_token& stop) {
  std::unique_ptr<CURLM, decltype(&curl_multi_cleanup)> multi(curl_multi_init(),
                                                              &curl_multi_cleanup);
  if (!multi) return CURLE_OUT_OF_MEMORY;
  curl_easy_setopt(easy, CURLOPT_NOPROGRESS, 0L);
  curl_easy_setopt(easy, CURLOPT_XFERINFOFUNCTION, &abort_on_stop);
  curl_easy_setopt(easy, CURLOPT_XFERINFODATA, &stop);
  if (CURLMcode added = curl_multi_add_handle(multi.get(), easy); added != CURLM_OK) {
    return added == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_FAILED_INIT;
  }
  CURLcode rc = CURLE_OK;
  CURLMcode mc = CURLM_OK;
  {
    // Declared after the multi handle, so destroyed before it; its destructor waits for a
    // wake-up that another thread's request_stop is making.
    std::stop_callback wake(stop, [m = multi.get()] { curl_multi_wakeup(m); });
    for (int running = 1; running > 0 && mc == CURLM_OK;) {
      mc = curl_multi_perform(multi.get(), &running);
      if (mc == CURLM_OK && running > 0) {
        // 1 s at most; curl shortens the wait to its own next timer.
        mc = curl_multi_poll(multi.get(), nullptr, 0, 1000, nullptr);
      }
    }
  }
  int left = 0;
  while (CURLMsg* message = curl_multi_info_read(multi.get(), &left)) {
    if (message->msg == CURLMSG_DONE) rc = message->data.result;
  }
  // What curl_easy_perform returns when its own multi handle fails.
  if (mc != CURLM_OK) {
    rc = mc == CURLM_OUT_OF_MEMORY ? CURLE_OUT_OF_MEMORY : CURLE_BAD_FUNCTION_ARGUMENT;
  }
  curl_multi_remove_handle(multi.get(), easy);
  return rc;
}

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
    case failure::cancelled:
      return "cancelled";
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

std::string client::complete(const std::string& url, const std::string& prompt,
                             std::stop_token stop) const {
  if (stop.stop_requested()) throw transfer::cancelled(url);
  transfer request(options_, url, prompt);
  CURLcode rc;
  {
    in_flight_guard guard(in_flight_, peak_);
    requests_.fetch_add(1, std::memory_order_relaxed);
    rc = perform(request.handle(), stop);
    request.close();  // closes the connection while the request still counts as in flight
  }
  return request.reply(rc);
}

}  // namespace llm
