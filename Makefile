# Thin wrapper over CMake so the README's two commands stay true:
#   make run   - install deps, build, start the sink in the foreground
#   make test  - install deps, build normal + ASan/UBSan + TSan, run every test
#   make install PREFIX=DIR - build, install bin/smtpsink, bin/smtpbench and
#                 share/man/man1/*.1 under DIR (default /usr/local; DESTDIR too)
#   make container-test - build the container image with podman and test it
# Variables: JOBS, BUILD, ASAN_BUILD, FUZZ_SECONDS, RUN_ARGS, QUICK, PREFIX.
JOBS ?= $(shell nproc)
BUILD ?= build
ASAN_BUILD ?= build-asan
TSAN_BUILD ?= build-tsan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20
RUN_ARGS ?= --stats-interval 1s
PREFIX ?= /usr/local

.PHONY: all deps build build-asan build-tsan test test-normal test-asan test-tsan tsan fuzz run bench clean \
	install container-test

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

build-tsan: deps
	cmake -S . -B $(TSAN_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSINK_TSAN=ON -DSINK_WERROR=ON
	cmake --build $(TSAN_BUILD) -j $(JOBS)

# ThreadSanitizer: the programs' threads (acceptor, workers, main) under the
# integration tests; any report fails the test (sinklib looks for it).
# (Criterion cannot run under TSan; the unit-tested code is single-threaded.)
test-tsan: build-tsan
	TSAN_OPTIONS=halt_on_error=0:exitcode=66:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/tsan.supp \
	  ctest --test-dir $(TSAN_BUILD) --output-on-failure -j 2 -R integration
tsan: test-tsan

# Short, bounded libFuzzer smoke run (clang only); skipped without clang.
fuzz: deps
	@if command -v clang >/dev/null 2>&1 && echo 'int LLVMFuzzerTestOneInput(const char *d, long n){return 0;}' | \
	    clang -x c -fsanitize=fuzzer -o /dev/null - >/dev/null 2>&1; then \
	  CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSINK_FUZZ=ON -DSINK_TESTS=ON && \
	  cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_all && \
	  scripts/fuzz-smoke.sh $(FUZZ_BUILD) $(FUZZ_SECONDS); \
	else echo "fuzz: clang with libFuzzer not found, skipped"; fi

test: test-normal test-asan test-tsan fuzz
	@echo "make test: all suites passed"

run: build
	$(BUILD)/server/smtpsink $(RUN_ARGS)

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

# Not part of `make test` (minutes, needs root, podman and the Debian mirror):
# .ci/run runs it after the tests.  Exit 77 from the script means skipped.
CONTAINER_PKGS = podman runc debootstrap containernetworking-plugins iptables
container-test:
	@if [ "$$(id -u)" -eq 0 ]; then SINK_DEPS_EXTRA="$(CONTAINER_PKGS)" scripts/deps.sh; fi
	@scripts/container-test.sh; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 77 ]

bench: build
	scripts/bench.sh $(if $(QUICK),--quick)

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(TSAN_BUILD) $(FUZZ_BUILD)
