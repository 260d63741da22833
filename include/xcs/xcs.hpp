// SPDX-License-Identifier: MIT
// The one header users include.
#pragma once

#include "xcs/analysis.hpp"
#include "xcs/error.hpp"
#include "xcs/executor.hpp"
#include "xcs/graph.hpp"
#include "xcs/jit.hpp"
#include "xcs/op.hpp"
#include "xcs/plan.hpp"
#include "xcs/signature.hpp"
#include "xcs/stats.hpp"
#include "xcs/traced.hpp"
