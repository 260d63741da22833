// SPDX-License-Identifier: MIT
// For the documentation's examples (with=ensemble_ops): the ops of a small ensemble, a few
// candidate answers, a judge that scores them and a synthesis, quick stand-ins for model calls.
#pragma once

#include <xcs/xcs.hpp>

#include <string>

inline auto gen =
    xcs::op("gen", [](const std::string& q, int seed) { return q + " #" + std::to_string(seed); });
inline auto judge =
    xcs::op("judge", [](const std::string& a, const std::string& b, const std::string& c) {
      return static_cast<int>((a.size() + b.size() + c.size()) % 10);
    });
inline auto synth =
    xcs::op("synth", [](const std::string& a, const std::string& b) { return a + " + " + b; });
