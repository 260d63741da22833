// SPDX-License-Identifier: MIT
// The one header users include.
#pragma once

#include "xcs/async_op.hpp"
#include "xcs/detail/analysis.hpp"
#include "xcs/detail/graph.hpp"
#include "xcs/detail/plan.hpp"
#include "xcs/detail/signature.hpp"
#include "xcs/error.hpp"
#include "xcs/executor.hpp"
#include "xcs/jit.hpp"
#include "xcs/op.hpp"
#include "xcs/stats.hpp"
#include "xcs/traced.hpp"
