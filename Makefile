# Thin wrapper around CMake. `make` builds, `make test` bootstraps, builds and
# runs every ctest suite. Each run starts with tools/bootstrap.sh, which is a
# no-op (well under 10 s) once the machine has what Aegis needs.

BUILD       ?= build
ASAN_BUILD  ?= build-asan
CMAKE_FLAGS ?=
JOBS        ?= $(shell nproc 2>/dev/null || echo 2)
CTEST_FLAGS ?= --output-on-failure -j$(JOBS)

SOURCES = $(shell git ls-files '*.c' '*.h' 2>/dev/null)

.PHONY: all build deps test demo asan-test format format-check clean distclean

all: build

deps:
	@mkdir -p $(BUILD)
	@prefix=$$(tools/bootstrap.sh) && echo "$$prefix" > $(BUILD)/.deps-prefix.new && \
	  mv $(BUILD)/.deps-prefix.new $(BUILD)/.deps-prefix

build: deps
	@cmake -S . -B $(BUILD) -DAEGIS_DEPS_PREFIX=$$(cat $(BUILD)/.deps-prefix) $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(BUILD) -j$(JOBS)

test: build
	@ctest --test-dir $(BUILD) $(CTEST_FLAGS)

# A whole fleet on this machine (tools/demo.sh): PostgreSQL, PKI, aegis-control, agents in
# network namespaces (as root; loopback otherwise), driven with aegisctl, then cleaned up.
# DEMO_FLAGS=--keep leaves it running and prints how to use and stop it.
DEMO_FLAGS ?=
demo: build
	@tools/demo.sh --build-dir $(BUILD) $(DEMO_FLAGS)

# Unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer.
asan-test: deps
	@mkdir -p $(ASAN_BUILD)
	@cmake -S . -B $(ASAN_BUILD) -DAEGIS_DEPS_PREFIX=$$(cat $(BUILD)/.deps-prefix) \
	  -DAEGIS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug $(CMAKE_FLAGS) >/dev/null
	@cmake --build $(ASAN_BUILD) -j$(JOBS)
	@ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) -L unit $(CTEST_FLAGS)

format:
	@clang-format -i $(SOURCES)

format-check:
	@clang-format --dry-run --Werror $(SOURCES) && echo "format-check: $(words $(SOURCES)) files clean"

clean:
	rm -rf $(BUILD) $(ASAN_BUILD)

# Also forget the dependency cache (the next build recompiles wolfSSL/ngtcp2).
distclean: clean
	rm -rf $${AEGIS_DEPS_CACHE:-$${XDG_CACHE_HOME:-$$HOME/.cache}/aegis-deps}
