// SPDX-License-Identifier: MIT
// The chat-completions client: the request over libcurl, JSON escaping, and a small JSON reader
// that finds choices[0].message.content.
#include "llm_client.hpp"

#include <curl/curl.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <utility>

namespace llm {
namespace {

/// A forward-only reader over one JSON text, enough to walk to a member and decode a string.
/// Every function returns false on input it cannot read; the reader is then in no useful state.
class json_reader {
 public:
  explicit json_reader(std::string_view text) : s_(text) {}

  /// At an object: moves to the value of its member `key`.
  bool enter_member(std::string_view key) {
    if (!take('{')) return false;
    if (take('}')) return false;
    std::string name;
    for (;;) {
      skip_space();
      if (!read_string(name) || !take(':')) return false;
      if (name == key) return true;
      if (!skip_value()) return false;
      if (take('}') || !take(',')) return false;
    }
  }

  /// At an array: moves to its element `index`.
  bool enter_element(std::size_t index) {
    if (!take('[')) return false;
    if (take(']')) return false;
    for (std::size_t i = 0;; ++i) {
      if (i == index) return true;
      if (!skip_value()) return false;
      if (take(']') || !take(',')) return false;
    }
  }

  /// At a string: decodes it into `out` (UTF-8).
  bool read_string(std::string& out) {
    skip_space();
    out.clear();
    if (pos_ >= s_.size() || s_[pos_] != '"') return false;
    ++pos_;
    while (pos_ < s_.size()) {
      char c = s_[pos_++];
      if (c == '"') return true;
      if (static_cast<unsigned char>(c) < 0x20) return false;
      if (c != '\\') {
        out += c;
        continue;
      }
      if (pos_ >= s_.size()) return false;
      switch (s_[pos_++]) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          std::uint32_t cp = 0;
          if (!read_hex4(cp)) return false;
          if (cp >= 0xD800 && cp <= 0xDBFF) {
            // A high surrogate: the pair's low half must follow as another \u escape.
            std::uint32_t low = 0;
            std::size_t save = pos_;
            if (s_.substr(pos_, 2) == "\\u" && (pos_ += 2, read_hex4(low)) && low >= 0xDC00 &&
                low <= 0xDFFF) {
              cp = 0x10000 + ((cp - 0xD800) << 10) + (low - 0xDC00);
            } else {
              pos_ = save;
              cp = 0xFFFD;
            }
          } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            cp = 0xFFFD;  // a low surrogate alone
          }
          append_utf8(out, cp);
          break;
        }
        default:
          return false;
      }
    }
    return false;
  }

  /// Skips one value of any kind. Nested objects and arrays are skipped by counting brackets
  /// outside strings, without checking what is inside.
  bool skip_value() {
    skip_space();
    if (pos_ >= s_.size()) return false;
    char c = s_[pos_];
    if (c == '"') {
      std::string ignored;
      return read_string(ignored);
    }
    if (c == '{' || c == '[') {
      std::size_t depth = 0;
      while (pos_ < s_.size()) {
        c = s_[pos_];
        if (c == '"') {
          std::string ignored;
          if (!read_string(ignored)) return false;
          continue;
        }
        ++pos_;
        if (c == '{' || c == '[') ++depth;
        if ((c == '}' || c == ']') && --depth == 0) return true;
      }
      return false;
    }
    // A number or true/false/null.
    std::size_t start = pos_;
    while (pos_ < s_.size() &&
           std::string_view(",}] \t\r\n").find(s_[pos_]) == std::string_view::npos) {
      ++pos_;
    }
    return pos_ > start;
  }

 private:
  void skip_space() {
    while (pos_ < s_.size() &&
           std::string_view(" \t\r\n").find(s_[pos_]) != std::string_view::npos) {
      ++pos_;
    }
  }
  bool take(char c) {
    skip_space();
    if (pos_ < s_.size() && s_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  bool read_hex4(std::uint32_t& out) {
    if (s_.size() - pos_ < 4) return false;
    out = 0;
    for (int i = 0; i < 4; ++i) {
      char c = s_[pos_++];
      out <<= 4;
      if (c >= '0' && c <= '9') {
        out |= static_cast<std::uint32_t>(c - '0');
      } else if (c >= 'a' && c <= 'f') {
        out |= static_cast<std::uint32_t>(c - 'a' + 10);
      } else if (c >= 'A' && c <= 'F') {
        out |= static_cast<std::uint32_t>(c - 'A' + 10);
      } else {
        return false;
      }
    }
    return true;
  }
  static void append_utf8(std::string& out, std::uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string_view s_;
  std::size_t pos_ = 0;
};

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

std::string json_escape(std::string_view s) {
  static constexpr char hex[] = "0123456789abcdef";
  std::string out;
  out.reserve(s.size() + s.size() / 8 + 2);
  for (char c : s) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\b':
        out += "\\b";
        break;
      case '\f':
        out += "\\f";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += "\\u00";
          out += hex[(c >> 4) & 0xF];
          out += hex[c & 0xF];
        } else {
          out += c;
        }
    }
  }
  return out;
}

std::string request_body(std::string_view model, std::string_view prompt) {
  return "{\"model\":\"" + json_escape(model) +
         "\",\"messages\":[{\"role\":\"user\",\"content\":\"" + json_escape(prompt) + "\"}]}";
}

std::optional<std::string> reply_content(std::string_view json) {
  json_reader r(json);
  std::string content;
  if (r.enter_member("choices") && r.enter_element(0) && r.enter_member("message") &&
      r.enter_member("content") && r.read_string(content)) {
    return content;
  }
  return std::nullopt;
}

std::optional<std::string> error_message(std::string_view json) {
  json_reader r(json);
  std::string message;
  if (r.enter_member("error") && r.enter_member("message") && r.read_string(message)) {
    return message;
  }
  return std::nullopt;
}

std::string client::complete(const std::string& url, const std::string& prompt) const {
  const std::string body = request_body(options_.model, prompt);
  const std::string where = "llm request to " + url;

  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> handle(curl_easy_init(), &curl_easy_cleanup);
  if (!handle) throw llm_error(failure::transport, 0, where + " failed: curl_easy_init failed");
  curl_slist* raw_headers = curl_slist_append(nullptr, "Content-Type: application/json");
  // Without this curl sends "Expect: 100-continue" for bodies over 1 KiB and waits a round
  // trip (or a second) for the server's go-ahead.
  raw_headers = curl_slist_append(raw_headers, "Expect:");
  std::string auth;
  if (!options_.api_key.empty()) {
    auth = "Authorization: Bearer " + options_.api_key;
    raw_headers = curl_slist_append(raw_headers, auth.c_str());
  }
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> headers(raw_headers,
                                                                      &curl_slist_free_all);

  std::string response;
  char detail[CURL_ERROR_SIZE] = {};
  CURL* h = handle.get();
  curl_easy_setopt(h, CURLOPT_URL, url.c_str());
  curl_easy_setopt(h, CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers.get());
  curl_easy_setopt(h, CURLOPT_USERAGENT, "xcs-llm-pipeline/0.1");
  curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, &append_response);
  curl_easy_setopt(h, CURLOPT_WRITEDATA, &response);
  curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, options_.timeout_ms);
  // Timeouts must not use signals: requests run on many threads at once.
  curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(h, CURLOPT_ERRORBUFFER, detail);

  CURLcode rc;
  long status = 0;
  {
    in_flight_guard guard(in_flight_, peak_);
    requests_.fetch_add(1, std::memory_order_relaxed);
    rc = curl_easy_perform(h);
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    handle.reset();  // closes the connection while the request still counts as in flight
  }

  if (rc == CURLE_OPERATION_TIMEDOUT) {
    throw llm_error(failure::timeout, 0,
                    where + " timed out after " + std::to_string(options_.timeout_ms) + " ms");
  }
  if (rc != CURLE_OK) {
    std::string message = where + " failed: " + curl_easy_strerror(rc);
    if (detail[0] != '\0') message += std::string(" (") + detail + ")";
    throw llm_error(failure::transport, 0, message);
  }
  if (status < 200 || status > 299) {
    std::optional<std::string> server_says = error_message(response);
    throw llm_error(failure::http_status, status,
                    where + " failed with HTTP " + std::to_string(status) + ": " +
                        (server_says ? *server_says : excerpt(response)));
  }
  std::optional<std::string> content = reply_content(response);
  if (!content) {
    throw llm_error(
        failure::bad_response, status,
        where + ": the response has no choices[0].message.content string: " + excerpt(response));
  }
  return std::move(*content);
}

}  // namespace llm
