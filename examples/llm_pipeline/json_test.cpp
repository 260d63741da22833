// SPDX-License-Identifier: MIT
// The request and reply JSON of the chat-completions client (nlohmann/json), without a server.
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

#include "embed.hpp"
#include "llm_client.hpp"

namespace {

TEST(LlmJsonTest, RequestBodyEscapesWhatJsonRequires) {
  auto content = [](const std::string& prompt) {
    std::string body = llm::request_body("m", prompt);
    const std::string head = R"({"model":"m","messages":[{"role":"user","content":")";
    EXPECT_EQ(body.substr(0, head.size()), head);
    EXPECT_EQ(body.substr(body.size() - 4), "\"}]}");
    return body.substr(head.size(), body.size() - head.size() - 4);
  };
  EXPECT_EQ(content("plain"), "plain");
  EXPECT_EQ(content("a\"b\\c/d"), "a\\\"b\\\\c/d");
  EXPECT_EQ(content("\n\r\t\b\f"), "\\n\\r\\t\\b\\f");
  EXPECT_EQ(content(std::string("\x01\x1f", 2)), "\\u0001\\u001f");
  EXPECT_EQ(content("caf\u00e9 \U0001F30D"), "caf\u00e9 \U0001F30D");  // UTF-8 as is
  // A byte that is not UTF-8 cannot go into JSON: it becomes U+FFFD.
  EXPECT_EQ(content("a\xff"
                    "b"),
            "a\uFFFD"
            "b");
  EXPECT_EQ(llm::request_body("m", "say \"hi\"\n"),
            R"({"model":"m","messages":[{"role":"user","content":"say \"hi\"\n"}]})");
}

TEST(LlmJsonTest, ReadsTheFirstChoicesContent) {
  // Members before and after, nested values to skip, escapes of every kind.
  const std::string body = R"({"id":"x","weird":{"choices":[1]},"choices":[
      {"index":0,"message":{"role":"assistant","tool_calls":[{"a":"]}"}],
       "content":"q\"b\\s\/ \n\t \u00e9 \u2014 \ud83c\udf0d"},"finish_reason":"stop"},
      {"message":{"content":"second"}}],"usage":{"total_tokens":3}})";
  EXPECT_EQ(llm::reply_content(body), "q\"b\\s/ \n\t \u00e9 \u2014 \U0001F30D");
  EXPECT_EQ(llm::reply_content(R"({"choices":[{"message":{"content":""}}]})"), "");
  EXPECT_EQ(llm::reply_content(R"({"choices":[{"message":{"content":null}}]})"), std::nullopt);
  EXPECT_EQ(llm::reply_content(R"({"choices":[]})"), std::nullopt);
  EXPECT_EQ(llm::reply_content(R"(["choices"])"), std::nullopt);
  EXPECT_EQ(llm::reply_content("not json"), std::nullopt);
  EXPECT_EQ(llm::reply_content(R"({"choices":[{"message":{"content":"unterminated)"), std::nullopt);
  // A lone surrogate has no UTF-8 form: the parser rejects the body (the old hand-written
  // reader put U+FFFD in its place).
  EXPECT_EQ(llm::reply_content(R"({"choices":[{"message":{"content":"\ud800x"}}]})"), std::nullopt);
  EXPECT_EQ(llm::error_message(R"({"error":{"type":"t","message":"Rate limit"}})"), "Rate limit");
  EXPECT_EQ(llm::error_message(R"({"error":"Rate limit"})"), std::nullopt);
}

TEST(LlmJsonTest, EmbedRequestIsAJsonArrayOfTheTexts) {
  EXPECT_EQ(llm::embed_request_body({"a", "say \"hi\"", ""}), R"(["a","say \"hi\"",""])");
  EXPECT_EQ(llm::embed_request_body({}), "[]");
  EXPECT_EQ(llm::embed_request_body({"a\xff"}), "[\"a\uFFFD\"]");
}

TEST(LlmJsonTest, EmbedReplyHasOneEntryPerText) {
  const std::string url = "http://h/v1/embed";
  EXPECT_EQ(llm::embed_reply(url, R"({"object":"list","data":["x","y"]})", 2),
            (std::vector<std::string>{"x", "y"}));
  auto error = [&](std::string_view body, std::size_t n) -> std::string {
    try {
      llm::embed_reply(url, body, n);
    } catch (const llm::llm_error& e) {
      EXPECT_EQ(e.kind(), llm::failure::bad_response);
      return e.what();
    }
    return "no error";
  };
  EXPECT_EQ(error(R"({"data":["x"]})", 2),
            "embed request to http://h/v1/embed: the reply has 1 entries for 2 texts");
  EXPECT_EQ(error(R"({"data":"x"})", 1),
            "embed request to http://h/v1/embed: the reply has no data array");
  EXPECT_EQ(error("not json", 1),
            "embed request to http://h/v1/embed: the reply has no data array");
  EXPECT_EQ(error(R"({"data":[1]})", 1),
            "embed request to http://h/v1/embed: the reply has an entry that is not a string");
}

}  // namespace
