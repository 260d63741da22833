#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Instructions per call of a cached 3-node plan (`add(inc(a), inc(a))` through xcs::jit), of a
# direct op call, and of a staged branchy call (4 trivial ops, one read), counted by callgrind:
# each program runs with 1,000 and 21,000 calls, and the difference over 20,000 calls is printed,
# so start-up, the first trace and the machine's load do not count. Built against a build
# directory's libxcs.a (Release, for figures to compare).
#
# Usage: bench/callgrind_calls.sh BUILD_DIR [SOURCE_DIR]
#   BUILD_DIR   a build directory holding libxcs.a (say build-bench)
#   SOURCE_DIR  the checkout whose include/ it was built from (default: this one), so an old
#               commit (git archive OLD | tar -x -C /tmp/old) is measured the same way
# Needs valgrind. Prints: "jitted <n> direct <n> staged <n>" (instructions per call).
set -euo pipefail

if [[ $# -lt 1 || $# -gt 2 ]]; then
  sed -n '9,13p' "$0" >&2
  exit 2
fi
if ! command -v valgrind >/dev/null; then
  echo "callgrind_calls.sh: valgrind not found (scripts/install-deps.sh bench installs it)" >&2
  exit 1
fi
here=$(cd "$(dirname "$0")" && pwd)
build=$(cd "$1" && pwd)
src=$(cd "${2:-$here/..}" && pwd)
work=$(mktemp -d /tmp/xcs-callgrind.XXXXXX)
trap 'rm -rf "$work"' EXIT

g++ -std=c++20 -O2 -DNDEBUG -I "$src/include" "$here/instructions/calls.cpp" -o "$work/calls" \
  "$build/libxcs.a" -lfmt -lboost_context -pthread

count() {  # count CALLS MODE: the instructions the program ran
  valgrind --tool=callgrind --callgrind-out-file="$work/cg.$1.$2" "$work/calls" "$1" "$2" \
    >/dev/null 2>"$work/log.$1.$2"
  grep -E '^(summary|totals):' "$work/cg.$1.$2" | head -n 1 | awk '{print $2}'
}
per_call() {  # per_call MODE
  local low high
  low=$(count 1000 "$1")
  high=$(count 21000 "$1")
  echo $(((high - low) / 20000))
}
echo "jitted $(per_call 0) direct $(per_call 1) staged $(per_call 2)"
