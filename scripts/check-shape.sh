#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Checks the shape of the library's code (src/ and include/), as the house style asks:
#   - no file over 500 lines;
#   - no function over 60 lines (measured by universal-ctags, from the line of its name to
#     the line of its closing brace);
#   - data flows one way: no header or source of the trace or IR layers includes, directly or
#     through other headers, a header of the plan, the run engine, the pool or the caches.
# Prints every breach and exits 1 if there is one; exits 77 (skipped) without universal-ctags.
#
# Usage: scripts/check-shape.sh [SOURCE_DIR]   (default: the checkout this script is in)
set -euo pipefail

root="${1:-$(cd "$(dirname "$0")/.." && pwd)}"
cd "$root"

readonly max_file_lines=500
readonly max_function_lines=60

# The trace and IR layers: what records a call into a graph, and the graph itself.
lower_layer=(include/xcs/traced.hpp include/xcs/detail/record.hpp
             include/xcs/detail/trace_context.hpp include/xcs/detail/graph.hpp
             include/xcs/detail/analysis.hpp include/xcs/detail/traits.hpp
             src/trace.cpp src/graph.cpp src/analysis.cpp)
# What they must not reach: the plan and its cache, the run engine, the pool, runtime state,
# and the result caches' stores.
upper_layer_pattern='^(include/xcs/detail/(plan|jit_core|op_runtime|op_table|cache_store|pipeline)\.hpp|src/(run|pool|fiber|jit_core|monitor|blocking_lane|timer)[a-z_]*\.hpp)$'

failures=0
fail() {
  echo "check-shape: $*" >&2
  failures=$((failures + 1))
}

mapfile -t files < <(find src include -type f \( -name '*.hpp' -o -name '*.cpp' \) | sort)
[ ${#files[@]} -gt 0 ] || { echo "check-shape: no sources under $root/src and include" >&2; exit 1; }

# ---- file length ---------------------------------------------------------------------------
for f in "${files[@]}"; do
  n=$(wc -l < "$f")
  [ "$n" -le $max_file_lines ] || fail "$f has $n lines (at most $max_file_lines)"
done

# ---- include graph -------------------------------------------------------------------------
# Resolves a quoted include as the build does: from include/, then beside the including file.
resolve() {
  local inc="$1" from="$2"
  if [ -f "include/$inc" ]; then
    echo "include/$inc"
  elif [ -f "$(dirname "$from")/$inc" ]; then
    realpath --relative-to=. "$(dirname "$from")/$inc"
  fi
}
for start in "${lower_layer[@]}"; do
  [ -f "$start" ] || { fail "$start (a trace or IR file this check names) is missing"; continue; }
  declare -A seen=()
  declare -A via=()
  queue=("$start")
  seen[$start]=1
  while [ ${#queue[@]} -gt 0 ]; do
    cur="${queue[0]}"
    queue=("${queue[@]:1}")
    while read -r inc; do
      next=$(resolve "$inc" "$cur")
      [ -n "$next" ] || continue
      [ -z "${seen[$next]:-}" ] || continue
      seen[$next]=1
      via[$next]="$cur"
      queue+=("$next")
      if [[ "$next" =~ $upper_layer_pattern ]]; then
        chain="$next"
        step="$cur"
        while [ "$step" != "$start" ]; do
          chain="$step -> $chain"
          step="${via[$step]}"
        done
        fail "$start reaches a runtime header: $start -> $chain"
      fi
    done < <(sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$cur")
  done
  unset seen via
done

# ---- function length -----------------------------------------------------------------------
if ! ctags --version 2>/dev/null | grep -q 'Universal Ctags'; then
  echo "check-shape: universal-ctags is not installed (scripts/install-deps.sh installs it);" \
       "function lengths not checked" >&2
  [ $failures -eq 0 ] || exit 1
  exit 77
fi
while read -r length where name; do
  fail "$where: function $name has $length lines (at most $max_function_lines)"
done < <(ctags --languages=C++ --kinds-C++=f --fields=+ne -f - "${files[@]}" |
         awk -F'\t' -v max=$max_function_lines '{
           line = 0; end = 0
           for (i = 4; i <= NF; i++) {
             if ($i ~ /^line:/) line = substr($i, 6)
             if ($i ~ /^end:/) end = substr($i, 5)
           }
           if (line > 0 && end > 0 && end - line + 1 > max) print end - line + 1, $2 ":" line, $1
         }')

if [ $failures -gt 0 ]; then
  echo "check-shape: $failures breach(es)" >&2
  exit 1
fi
echo "check-shape: ${#files[@]} files, none over $max_file_lines lines, no function over" \
     "$max_function_lines, no include from the trace or IR layers up to the plan, run or caches"
