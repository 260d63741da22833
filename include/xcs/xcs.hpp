// SPDX-License-Identifier: MIT
// The one header users include: jit, op and its options, traced values, stats, errors and the
// executor controls. The pipeline's internals (xcs::detail) are not part of it.
#pragma once

#include "xcs/error.hpp"
#include "xcs/executor.hpp"
#include "xcs/jit.hpp"
#include "xcs/op.hpp"
#include "xcs/stats.hpp"
#include "xcs/traced.hpp"
