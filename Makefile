# SPDX-License-Identifier: MIT
# Entry points for developers and CI; CMake does the real work.
#   make build | demo | test | bench | test-asan | test-tsan | test-user-flags | format |
#        format-check | clean

JOBS ?= 2
CTEST_TIMEOUT ?= 300
CLANG_FORMAT ?= clang-format
CMAKE_GENERATOR_ARGS = $(if $(shell command -v ninja 2>/dev/null),-G Ninja,)

# $(call configure,DIR,EXTRA_ARGS): the generator is chosen only when DIR is new, since
# CMake refuses to switch the generator of an existing build tree.
configure = cmake -S . -B $(1) $(if $(wildcard $(1)/CMakeCache.txt),,$(CMAKE_GENERATOR_ARGS)) $(2)

CTEST = ctest --output-on-failure --no-tests=error -j$(JOBS) --timeout $(CTEST_TIMEOUT)
# Sanitizer builds at -O1 -g, as users build with sanitizers (Debug hides what the optimizer
# does); wall-clock tests (label `timing`) are skipped there, since sanitizers stretch every op.
SANITIZER_BUILD_ARGS = -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g" \
                       -DXCS_BUILD_TESTS=ON -DXCS_BUILD_EXAMPLES=ON -DXCS_BUILD_BENCHMARKS=OFF

.PHONY: all deps deps-bench deps-clang build demo test bench test-asan test-tsan test-user-flags \
        format format-check clean

all: build

deps:
	scripts/install-deps.sh
	-scripts/install-deps.sh http
	-scripts/install-deps.sh redis
	-scripts/install-deps.sh sqlite

deps-bench: deps
	scripts/install-deps.sh bench

deps-clang: deps
	scripts/install-deps.sh clang

build: deps
	$(call configure,build,-DCMAKE_BUILD_TYPE=RelWithDebInfo)
	cmake --build build -j$(JOBS)

demo: build
	build/examples/quickstart

test: build
	$(CTEST) --test-dir build

bench: deps-bench
	$(call configure,build-bench,-DCMAKE_BUILD_TYPE=Release -DXCS_BUILD_BENCHMARKS=ON \
	  -DXCS_BUILD_TESTS=OFF -DXCS_BUILD_EXAMPLES=OFF)
	cmake --build build-bench -j$(JOBS)
	@set -e; found=0; for b in build-bench/bench/*_bench; do \
	  [ -x "$$b" ] || continue; found=1; name=$$(basename "$$b"); \
	  echo "== $$name"; \
	  "$$b" --benchmark_out=build-bench/$$name.json --benchmark_out_format=json; \
	done; \
	[ $$found -eq 1 ] || { echo "no benchmark binaries in build-bench/bench" >&2; exit 1; }

test-asan: deps
	$(call configure,build-asan,-DXCS_SANITIZE=address $(SANITIZER_BUILD_ARGS))
	cmake --build build-asan -j$(JOBS)
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  $(CTEST) --test-dir build-asan -LE timing

test-tsan: deps
	$(call configure,build-tsan,-DXCS_SANITIZE=thread $(SANITIZER_BUILD_ARGS))
	cmake --build build-tsan -j$(JOBS)
	TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 \
	  $(CTEST) --test-dir build-tsan -LE timing

# A program built with the user's sanitizer flags (g++ and clang++, -O0/-O1/-O2) must run
# without a single ASan or UBSan report.
test-user-flags: deps-clang
	JOBS=$(JOBS) scripts/check-user-flags.sh build-user-flags

format:
	git ls-files -z '*.hpp' '*.cpp' '*.h' | xargs -0 -r $(CLANG_FORMAT) -i

format-check:
	git ls-files -z '*.hpp' '*.cpp' '*.h' | xargs -0 -r $(CLANG_FORMAT) --dry-run --Werror

clean:
	rm -rf build build-bench build-asan build-tsan build-user-flags
