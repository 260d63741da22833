// SPDX-License-Identifier: MIT
// The one header users include: jitted functions, ops and async ops, traced values, xcs::map and
// xcs::get, rate limiters, result caches, statistics, errors and the executor controls. Everything
// under xcs/detail/ is internal.
#pragma once

#include "xcs/async_op.hpp"
#include "xcs/batch_op.hpp"
#include "xcs/cache.hpp"
#include "xcs/error.hpp"
#include "xcs/executor.hpp"
#include "xcs/jit.hpp"
#include "xcs/map.hpp"
#include "xcs/op.hpp"
#include "xcs/rate_limit.hpp"
#include "xcs/stats.hpp"
#include "xcs/traced.hpp"
