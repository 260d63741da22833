#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Installs the Debian packages that building and testing xcs needs, and only the
# missing ones, so a second run costs a few dpkg queries.
#
# Usage: scripts/install-deps.sh [bench] [http] [redis] [sqlite] [clang]
#   (no argument)  compiler toolchain (g++, and clang++ for the strict-warnings test), CMake,
#                  Ninja, Boost.Context, fmt, GoogleTest, Google Benchmark, clang-format,
#                  universal-ctags (the code_shape test measures functions with it)
#   bench          adds oneTBB, the baseline the benchmarks compare against, and valgrind
#                  (bench/callgrind_calls.sh counts instructions with it)
#   clang          adds clang's sanitizer runtimes (clang++ is in the base set), for
#                  scripts/check-user-flags.sh
#   http           adds libcurl, nlohmann/json, nginx and its echo module, for the HTTP
#                  example (examples/llm_pipeline) and its tests
#   redis          adds hiredis, nlohmann/json and redis-server, for the optional component
#                  xcs::redis (<xcs/redis.hpp>: rate limits and a result cache shared by
#                  processes) and its tests
#   sqlite         adds SQLite's development files, for the batched-lookup example
#                  (examples/sqlite_lookup) and its tests
#
# When packages cannot be installed (no root, no sudo, no network) it names them
# and exits 0, so that CMake's configure step reports the precise missing piece.
set -euo pipefail

packages=(cmake g++ clang make ninja-build pkg-config clang-format universal-ctags
          libboost-context-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev)
for set_name in "$@"; do
  case "$set_name" in
    bench) packages+=(libtbb-dev valgrind) ;;
    http) packages+=(libcurl4-openssl-dev nlohmann-json3-dev nginx libnginx-mod-http-echo) ;;
    redis) packages+=(libhiredis-dev nlohmann-json3-dev redis-server) ;;
    sqlite) packages+=(libsqlite3-dev) ;;
    clang) packages+=(libclang-rt-dev) ;;
    *) echo "install-deps.sh: unknown package set '$set_name' (expected: bench, http, redis, sqlite, clang)" >&2
       exit 2 ;;
  esac
done

is_installed() {
  dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q '^install ok installed$'
}

if ! command -v dpkg-query >/dev/null 2>&1; then
  echo "install-deps.sh: not a Debian system; make sure these are installed: ${packages[*]}" >&2
  exit 0
fi

missing=()
for pkg in "${packages[@]}"; do
  is_installed "$pkg" || missing+=("$pkg")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi

if [ "$(id -u)" -eq 0 ]; then
  as_root=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  as_root=(sudo -n)
else
  echo "install-deps.sh: missing packages, and no root or passwordless sudo to install them:" >&2
  echo "  ${missing[*]}" >&2
  exit 0
fi

apt_install() {
  "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "$@"
}

echo "install-deps.sh: installing ${missing[*]}"
# One 'apt-get update' serves every call made within the hour (make deps calls twice).
# apt keeps the servers' dates on its lists, so the freshness needs a stamp of our own.
update_stamp="${TMPDIR:-/tmp}/xcs-apt-update.stamp"
if [ -z "$(find "$update_stamp" -mmin -60 2>/dev/null)" ]; then
  if "${as_root[@]}" apt-get update -qq; then
    touch "$update_stamp" 2>/dev/null || true
  else
    echo "install-deps.sh: apt-get update failed" >&2
  fi
fi
if ! apt_install "${missing[@]}" && [ ${#missing[@]} -gt 1 ]; then
  # apt installs all or nothing: one unavailable package must not hold back the rest.
  for pkg in "${missing[@]}"; do
    is_installed "$pkg" || apt_install "$pkg" || true
  done
fi

still_missing=()
for pkg in "${missing[@]}"; do
  is_installed "$pkg" || still_missing+=("$pkg")
done
if [ ${#still_missing[@]} -gt 0 ]; then
  echo "install-deps.sh: could not install: ${still_missing[*]}" >&2
fi
exit 0
