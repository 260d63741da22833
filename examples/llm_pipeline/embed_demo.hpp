// SPDX-License-Identifier: MIT
// The example's embed mode (llm_pipeline --embed N --max-batch M): N texts to an
// embeddings-style batch endpoint, directly, through a plain async op, and through a batched op.
#pragma once

#include <cstddef>
#include <string>

#include "async_client.hpp"
#include "local_server.hpp"

namespace llm {

/// Embeds `texts` texts at `url` three ways and prints each way's time and requests (counted
/// by the client, and in `server`'s access log when there is one). Returns whether the three
/// agree with each other and with the texts (the local server echoes them).
bool run_embed_demo(async_client& api, const std::string& url, std::size_t texts,
                    std::size_t max_batch, const local_server* server);

}  // namespace llm
