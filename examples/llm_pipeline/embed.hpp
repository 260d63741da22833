// SPDX-License-Identifier: MIT
// An embeddings-style batch endpoint: one POST of a JSON array of texts, one reply entry per
// text; and the async ops that send texts to it, one request per text or one per batch.
#pragma once

#include <xcs/xcs.hpp>

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "async_client.hpp"

namespace llm {

/// The request body: the texts as a JSON array of strings (bytes that are not UTF-8 become
/// U+FFFD, as in chat requests).
std::string embed_request_body(const std::vector<std::string>& texts);

/// The reply's entries: `data`, an array of strings, of a body {"data": [...]}, which must have
/// one entry per text sent (`expected`), in the same order. Throws llm_error
/// (`failure::bad_response`, naming `url` and both sizes) otherwise. The local server's
/// /v1/embed echoes each text back as its entry, a stand-in for the text's vector.
std::vector<std::string> embed_reply(const std::string& url, std::string_view body,
                                     std::size_t expected);

/// A batch op's function: one request for every text of the batch, completed on the client's
/// event thread with the reply's entries, or failed with the request's llm_error. Pass it to
/// `xcs::batch_op("embed", llm::embed_batch_fn{&api, url}, xcs::max_batch(n))`.
struct embed_batch_fn {
  async_client* api;
  std::string url;
  void operator()(const std::vector<std::string>& texts,
                  xcs::completion<std::vector<std::string>> done) const;
};

/// The same endpoint, one request per text (a one-entry array): the async op a batch op
/// replaces. `xcs::async_op("embed", llm::embed_one_fn{&api, url})`.
struct embed_one_fn {
  async_client* api;
  std::string url;
  void operator()(const std::string& text, xcs::completion<std::string> done) const;
};

/// "text 0", "text 1", ...: the texts the demo and the tests embed.
std::vector<std::string> embed_texts(std::size_t n);

}  // namespace llm
