# The front door: every target is a thin call into CMake, CTest or scripts/.
BUILD_DIR    ?= build
SANITIZE_DIR ?= build-sanitize
RELEASE_DIR  ?= build-release
FUZZ_DIR     ?= build-fuzz
JOBS         ?= $(shell nproc)
CTEST_ARGS   ?= --output-on-failure

.PHONY: all deps build test test-unit test-integration sanitize release-check fuzz run stop bench clean format

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD_DIR) -DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null
	@cmake --build $(BUILD_DIR) -j $(JOBS)

test: build
	@cd $(BUILD_DIR) && ctest $(CTEST_ARGS) -L 'unit|integration' -j 2

test-unit: build
	@cd $(BUILD_DIR) && ctest $(CTEST_ARGS) -L unit

test-integration: build
	@cd $(BUILD_DIR) && ctest $(CTEST_ARGS) -L integration

sanitize: deps
	@cmake -S . -B $(SANITIZE_DIR) -DCMAKE_BUILD_TYPE=Debug -DRL_SANITIZE=ON >/dev/null
	@cmake --build $(SANITIZE_DIR) -j $(JOBS)
	@cd $(SANITIZE_DIR) && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp:print_suppressions=0 \
	  UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest $(CTEST_ARGS) -L 'unit|integration' -j 2

# Compiles everything at -O3: gcc's flow analysis sees more there (a
# maybe-uninitialized warning is an error under -Werror).
release-check: deps
	@cmake -S . -B $(RELEASE_DIR) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(RELEASE_DIR) -j $(JOBS)

# The parsers and encoders that see untrusted bytes, under libFuzzer with
# ASan + UBSan (clang), FUZZ_SECONDS (default 20) per target: tests/fuzz.
fuzz:
	@RL_WITH_FUZZ=1 scripts/install-deps.sh
	@cmake -S . -B $(FUZZ_DIR) -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Debug \
	  -DCMAKE_C_FLAGS_DEBUG="-O1 -g" -DRL_FUZZ=ON >/dev/null
	@cmake --build $(FUZZ_DIR) -j $(JOBS)
	@FUZZ_DIR=$(FUZZ_DIR) scripts/fuzz.sh

run: build
	@scripts/run.sh

stop:
	@scripts/stop.sh

bench: build
	@RL_WITH_BENCH=1 scripts/install-deps.sh
	@tests/bench/run.sh
	@bash tests/bench/writer.sh

format:
	@clang-format -i libs/common/*.[ch] services/*/*.[ch] tests/unit/*/*.c tests/fuzz/*.[ch]

clean:
	rm -rf $(BUILD_DIR) $(SANITIZE_DIR) $(RELEASE_DIR) $(FUZZ_DIR)
