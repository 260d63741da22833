// SPDX-License-Identifier: MIT
// The embeddings-style batch endpoint (/v1/embed) against a local nginx: the endpoint itself,
// and 1,000 texts sent through an async op, one request per text or one per batch, as counted
// in nginx's access log.
#include <chrono>
#include <cstddef>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "async_client.hpp"
#include "embed.hpp"
#include "test_support.hpp"

namespace {

using namespace llm_test;

class EmbedTest : public AsyncServerTest {
 protected:
  // Requests for /v1/embed in the access log, and whether all of them ended with 200.
  std::size_t embed_requests(bool* all_ok = nullptr) const {
    std::size_t n = 0;
    bool ok = true;
    for (const llm::access_entry& e : server_->access_log()) {
      if (e.uri != llm::local_server::embed_path) continue;
      ++n;
      ok = ok && e.status == 200;
    }
    if (all_ok != nullptr) *all_ok = ok;
    return n;
  }
  // The same once `due` lines are there, or after 2 s: nginx writes a request's line after it
  // has sent the response, so a test that reads the log at once may find it missing.
  std::size_t embed_requests_when(std::size_t due, bool* all_ok = nullptr) const {
    const auto give_up = std::chrono::steady_clock::now() + std::chrono::seconds(2);
    std::size_t n = embed_requests(all_ok);
    while (n < due && std::chrono::steady_clock::now() < give_up) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
      n = embed_requests(all_ok);
    }
    return n;
  }
};

TEST_F(EmbedTest, TheEndpointRepliesWithOneEntryPerText) {
  llm::async_client api(options_at(server_->embed_url()));
  const std::vector<std::string> texts = {"first", "say \"hi\"\n", "caf\u00e9 \U0001F30D", ""};
  xcs::async_op_fn<llm::embed_batch_fn, std::vector<std::string>> embed_all =
      xcs::async_op("embed", llm::embed_batch_fn{&api, server_->embed_url()});
  EXPECT_EQ(embed_all(texts), texts);
  EXPECT_EQ(embed_requests_when(1), 1u);
}

TEST_F(EmbedTest, APlainAsyncOpSendsOneRequestPerText) {
  llm::async_client api(options_at(server_->embed_url()));
  auto embed = xcs::async_op("embed", llm::embed_one_fn{&api, server_->embed_url()});
  auto embed_each = xcs::jit([embed](const auto& texts) { return xcs::map(embed, texts); });
  const std::vector<std::string> texts = llm::embed_texts(kBurst);
  double ms = millis([&] { EXPECT_EQ(embed_each(texts), texts); });
  bool all_ok = false;
  EXPECT_EQ(embed_requests_when(kBurst, &all_ok), static_cast<std::size_t>(kBurst));
  EXPECT_TRUE(all_ok);
  std::printf("%d texts, plain async op: %.1f ms, %zu requests\n", kBurst, ms, embed_requests());
}

TEST_F(EmbedTest, ExampleEmbedModeComparesTheWays) {
  process_result r = run_process({XCS_LLM_PIPELINE_EXE, "--url", server_->embed_url(), "--embed",
                                  "1000", "--max-batch", "100"});
  ASSERT_EQ(r.exit_code, 0) << r.output;
  auto summary = parse_summary(r.output);
  ASSERT_FALSE(summary.empty()) << r.output;
  EXPECT_EQ(summary["same"], "yes");
  EXPECT_EQ(summary["direct_requests"], "1000");
  EXPECT_EQ(summary["jitted_requests"], "1000");
  EXPECT_EQ(summary["batched_requests"], "10");
  // Each way once, and each jitted function's tracing call once more.
  EXPECT_EQ(embed_requests_when(3000u + 20u), 3000u + 20u);

  r = run_process({XCS_LLM_PIPELINE_EXE, "--url", server_->embed_url(), "--embed", "0"});
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.output.find("--embed expects an integer >= 1, not '0'"), std::string::npos)
      << r.output;
}

class EmbedBatchTest : public EmbedTest, public ::testing::WithParamInterface<std::size_t> {};

// The lengths of the embeddings; an int read of it makes a body staged.
struct total_length_fn {
  std::size_t operator()(const std::vector<std::string>& vectors) const {
    std::size_t n = 0;
    for (const std::string& v : vectors) n += v.size();
    return n;
  }
};

TEST_P(EmbedBatchTest, ABatchedAsyncOpSendsOneRequestPerBatch) {
  const std::size_t max_batch = GetParam();
  llm::async_client api(options_at(server_->embed_url()));
  auto embed = xcs::batch_op("embed", llm::embed_batch_fn{&api, server_->embed_url()},
                             xcs::max_batch(max_batch));
  auto embed_each = xcs::jit([embed](const auto& texts) { return xcs::map(embed, texts); });
  const std::vector<std::string> texts = llm::embed_texts(kBurst);
  const std::size_t batches = (kBurst + max_batch - 1) / max_batch;
  for (std::size_t call = 1; call <= 2; ++call) {
    double ms = millis([&] { EXPECT_EQ(embed_each(texts), texts); });
    bool all_ok = false;
    EXPECT_EQ(embed_requests_when(call * batches, &all_ok), call * batches)
        << "max_batch " << max_batch;
    EXPECT_TRUE(all_ok);
    std::printf("%d texts, batch op, max_batch %zu: %.1f ms, %zu requests\n", kBurst, max_batch, ms,
                batches);
  }
  EXPECT_EQ(api.requests(), 2 * batches);
}

TEST_P(EmbedBatchTest, AStagedCallSendsTheSameBatches) {
  const std::size_t max_batch = GetParam();
  llm::async_client api(options_at(server_->embed_url()));
  auto embed = xcs::batch_op("embed", llm::embed_batch_fn{&api, server_->embed_url()},
                             xcs::max_batch(max_batch));
  auto total_length = xcs::op("total_length", total_length_fn{});
  auto checked = xcs::jit([embed, total_length](const auto& texts) {
    auto vectors = xcs::map(embed, texts);
    if (total_length(vectors) == 0u) throw std::runtime_error("no embeddings");  // a read
    return vectors;
  });
  const std::vector<std::string> texts = llm::embed_texts(kBurst);
  EXPECT_EQ(checked(texts), texts);
  const std::size_t batches = (kBurst + max_batch - 1) / max_batch;
  EXPECT_EQ(api.requests(), batches);  // the client's count: exact at once
  EXPECT_EQ(embed_requests_when(batches), batches);
  EXPECT_EQ(checked.stats().staged_calls, 1u);
}

INSTANTIATE_TEST_SUITE_P(MaxBatch, EmbedBatchTest, ::testing::Values(100, 64));

}  // namespace
