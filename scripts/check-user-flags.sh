#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds xcs and a program that uses it (tests/user_flags/main.cpp) the way a user with
# sanitizers does, and runs the program: any ASan or UBSan report, from xcs's headers or its
# library, fails the check.
#
#   flags:      -fsanitize=address,undefined -fno-sanitize-recover=undefined (the user's)
#   compilers:  g++ and clang++ (each builds its own libxcs: the runtimes differ)
#   program:    at -O0, -O1 and -O2; the library at -O1
#   run:        halt_on_error, abort_on_error, leak checking on
#
# Usage: scripts/check-user-flags.sh [build-dir]   (default: build-user-flags)
# Environment: XCS_USER_FLAGS_COMPILERS="g++ clang++", XCS_USER_FLAGS_OPT="-O0 -O1 -O2".
set -euo pipefail
cd "$(dirname "$0")/.."

mkdir -p "${1:-build-user-flags}"
out="$(cd "${1:-build-user-flags}" && pwd)"
read -r -a compilers <<<"${XCS_USER_FLAGS_COMPILERS:-g++ clang++}"
read -r -a levels <<<"${XCS_USER_FLAGS_OPT:--O0 -O1 -O2}"
sanitize=(-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer -g)
jobs="${JOBS:-2}"

generator=()
if command -v ninja >/dev/null; then generator=(-G Ninja); fi
launcher=()
cache=()
if command -v ccache >/dev/null; then
  launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
  cache=(ccache)
fi

export ASAN_OPTIONS="halt_on_error=1:abort_on_error=1:detect_leaks=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"

for cxx in "${compilers[@]}"; do
  if ! command -v "$cxx" >/dev/null; then
    echo "check-user-flags: $cxx not found (scripts/install-deps.sh clang installs clang++)" >&2
    exit 1
  fi
  lib="$out/$cxx/lib"
  prefix="$out/$cxx/prefix"
  echo "== $cxx: libxcs with the user's flags"
  # Not XCS_SANITIZE: a user's flags reach xcs through CMAKE_CXX_FLAGS (add_subdirectory, or
  # a package built with them), so xcs must notice the sanitizers by itself.
  cmake -S . -B "$lib" "${generator[@]}" "${launcher[@]}" -DCMAKE_CXX_COMPILER="$cxx" \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 \
    -DCMAKE_CXX_FLAGS="${sanitize[*]}" -DXCS_BUILD_TESTS=OFF -DXCS_BUILD_EXAMPLES=OFF \
    -DXCS_BUILD_BENCHMARKS=OFF -DCMAKE_INSTALL_PREFIX="$prefix" >/dev/null
  cmake --build "$lib" -j"$jobs"
  cmake --install "$lib" >/dev/null
  pc_file="$(find "$prefix" -name xcs.pc | head -n 1)"
  if [ -z "$pc_file" ]; then
    echo "check-user-flags: no xcs.pc installed under $prefix" >&2
    exit 1
  fi
  pc_dir="$(dirname "$pc_file")"
  read -r -a xcs_cflags <<<"$(PKG_CONFIG_PATH="$pc_dir" pkg-config --cflags xcs)"
  read -r -a xcs_libs <<<"$(PKG_CONFIG_PATH="$pc_dir" pkg-config --libs xcs)"
  for opt in "${levels[@]}"; do
    program="$out/$cxx/user_flags$opt"
    echo "== $cxx $opt: build and run"
    "${cache[@]}" "$cxx" "${sanitize[@]}" "$opt" "${xcs_cflags[@]}" \
      -c tests/user_flags/main.cpp -o "$program.o"
    "$cxx" "${sanitize[@]}" "$program.o" -o "$program" "${xcs_libs[@]}"
    "$program"
  done
done
echo "check-user-flags: no sanitizer report with ${compilers[*]} at ${levels[*]}"
