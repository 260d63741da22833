// SPDX-License-Identifier: MIT
// Included first by every `statements` block of the documentation: what a short fragment may
// use without showing its #includes.
#pragma once

#include <fmt/core.h>
#include <xcs/xcs.hpp>

#include <array>
#include <chrono>
#include <condition_variable>
#include <iostream>
#include <mutex>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>
