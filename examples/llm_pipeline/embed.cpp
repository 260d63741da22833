// SPDX-License-Identifier: MIT
// The embeddings-style endpoint's JSON (nlohmann/json), and its two async op functions.
#include "embed.hpp"

#include <fmt/format.h>

#include <nlohmann/json.hpp>

#include <exception>
#include <stop_token>
#include <utility>

#include "llm_client.hpp"

namespace llm {
namespace {

using nlohmann::json;

llm_error bad_reply(const std::string& url, const std::string& what) {
  return llm_error(failure::bad_response, 200,
                   fmt::format("embed request to {}: the reply {}", url, what));
}

}  // namespace

std::string embed_request_body(const std::vector<std::string>& texts) {
  return json(texts).dump(-1, ' ', /*ensure_ascii=*/false, json::error_handler_t::replace);
}

std::vector<std::string> embed_reply(const std::string& url, std::string_view body,
                                     std::size_t expected) {
  json doc = json::parse(body, /*cb=*/nullptr, /*allow_exceptions=*/false);
  if (doc.is_discarded() || !doc.is_object() || !doc.contains("data") || !doc["data"].is_array()) {
    throw bad_reply(url, "has no data array");
  }
  const json& data = doc["data"];
  if (data.size() != expected) {
    throw bad_reply(url, fmt::format("has {} entries for {} texts", data.size(), expected));
  }
  std::vector<std::string> out;
  out.reserve(data.size());
  for (const json& entry : data) {
    if (!entry.is_string()) throw bad_reply(url, "has an entry that is not a string");
    out.push_back(entry.get<std::string>());
  }
  return out;
}

void embed_batch_fn::operator()(const std::vector<std::string>& texts,
                                xcs::completion<std::vector<std::string>> done) const {
  std::stop_token stop = done.stop_token();  // before `done` moves into the callback
  api->post(
      url, embed_request_body(texts),
      [url = url, n = texts.size(), done = std::move(done)](reply_or_error reply) mutable {
        // On the event thread: parse, then complete; nothing here may throw out.
        try {
          done(embed_reply(url, std::move(reply).value(), n));
        } catch (...) {
          done.fail(std::current_exception());
        }
      },
      std::move(stop));
}

void embed_one_fn::operator()(const std::string& text, xcs::completion<std::string> done) const {
  std::stop_token stop = done.stop_token();
  api->post(
      url, embed_request_body({text}),
      [url = url, done = std::move(done)](reply_or_error reply) mutable {
        try {
          done(std::move(embed_reply(url, std::move(reply).value(), 1).front()));
        } catch (...) {
          done.fail(std::current_exception());
        }
      },
      std::move(stop));
}

std::vector<std::string> embed_texts(std::size_t n) {
  std::vector<std::string> texts;
  texts.reserve(n);
  for (std::size_t i = 0; i < n; ++i) texts.push_back(fmt::format("text {}", i));
  return texts;
}

}  // namespace llm
