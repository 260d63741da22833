// SPDX-License-Identifier: MIT
// INTERNAL: the pipeline's stages (signature, graph, analysis, plan) for xcs's own tests and
// benchmarks. Not part of the API: names here change without notice.
#pragma once

#include "xcs/detail/analysis.hpp"
#include "xcs/detail/graph.hpp"
#include "xcs/detail/jit_core.hpp"
#include "xcs/detail/op_runtime.hpp"
#include "xcs/detail/op_table.hpp"
#include "xcs/detail/plan.hpp"
#include "xcs/detail/signature.hpp"
#include "xcs/detail/trace_context.hpp"
#include "xcs/xcs.hpp"
