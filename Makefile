# Thin wrapper over CMake so the README's two commands stay true:
#   make run   - install deps, build, start the sink in the foreground
#   make test  - install deps, build normal + ASan/UBSan, run every test
# Variables: JOBS, BUILD, ASAN_BUILD, FUZZ_SECONDS, RUN_ARGS, QUICK.
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20
RUN_ARGS ?= --stats-interval 1s

.PHONY: all deps build build-asan test test-normal test-asan fuzz run bench clean

all: build

deps:
	@scripts/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSINK_WERROR=ON

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DSINK_SANITIZE=ON -DSINK_WERROR=ON
	cmake --build $(ASAN_BUILD) -j $(JOBS)

test-normal: build
	ctest --test-dir $(BUILD) --output-on-failure -j 2

test-asan: build-asan
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	  ctest --test-dir $(ASAN_BUILD) --output-on-failure -j 2

# Short, bounded libFuzzer smoke run (clang only); skipped without clang.
fuzz: deps
	@if command -v clang >/dev/null 2>&1 && echo 'int LLVMFuzzerTestOneInput(const char *d, long n){return 0;}' | \
	    clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1; then \
	  CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSINK_FUZZ=ON -DSINK_TESTS=ON && \
	  cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_all && \
	  scripts/fuzz-smoke.sh $(FUZZ_BUILD) $(FUZZ_SECONDS); \
	else echo "fuzz: clang with libFuzzer not found, skipped"; fi

test: test-normal test-asan fuzz
	@echo "make test: all suites passed"

run: build
	$(BUILD)/server/smtpsink $(RUN_ARGS)

bench: build
	scripts/bench.sh $(if $(QUICK),--quick)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
