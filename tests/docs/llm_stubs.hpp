// SPDX-License-Identifier: MIT
// For the documentation's examples (with=llm_stubs): stand-ins for a model call and a scorer.
#pragma once

#include <string>

inline std::string call_llm(const std::string& prompt) { return "summary of " + prompt; }

inline double similarity(const std::string& a, const std::string& b) {
  return a.size() == b.size() ? 1.0 : 0.5;
}
