# linattn: the two set-up commands of the README, and a few more.
#
#   make demo     install missing Debian packages (when root), configure, build, run `linattn demo`
#   make test     the same set-up, then the whole CTest suite
#   make test-asan    the suite again under AddressSanitizer + UndefinedBehaviorSanitizer
#   make test-portable    the suite again without SIMD clones and without OpenMP
#   make bench    the benchmark of docs/BENCHMARKS.md (takes several minutes)
#   make install  library, header, pkg-config file and program under PREFIX (default /usr/local)
#   make clean
#
# CMake does the building (build/ for Release, build-asan/ for the sanitizer pass).

SHELL    := /bin/bash
PREFIX   ?= /usr/local
JOBS     ?= $(shell nproc 2>/dev/null || echo 2)
BUILD    ?= build
CMAKE_FLAGS ?=

# Debian packages the build and tests need. libopenblas0 is loaded at run time for sgemm
# (optional for the library, used by the benchmark's reference rate); gnuplot draws the plots
# of `linattn sweep` (the sweep test checks them).
DEB_PACKAGES := cmake make gcc libc6-dev libcjson-dev libopenblas-dev pkg-config gnuplot-nox

.PHONY: all deps configure build demo test test-asan test-portable bench install clean

all: build

# Installs what is missing, as root (CI and fresh machines run as root); as another user it
# names the missing packages and stops. A machine that already has everything needs no root.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing:$$missing"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	  else \
	    echo "missing Debian packages:$$missing (run as root: apt-get install$$missing)"; exit 1; \
	  fi; \
	fi

configure: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release $(CMAKE_FLAGS) >/dev/null

build: configure
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	./$(BUILD)/linattn demo

# The run ends with CTest's summary line ("100% tests passed, 0 tests failed out of N"): the
# timing line CTest prints after it is dropped.
test: build
	@cd $(BUILD) && set -o pipefail && ctest --output-on-failure -j $(JOBS) 2>&1 | \
	  awk '/^Total Test time/ { next } NF { if (blank) print ""; blank = 0; print; next } { blank = 1 }'

# The suite under AddressSanitizer + UndefinedBehaviorSanitizer.
test-asan:
	@$(MAKE) --no-print-directory test BUILD=build-asan CMAKE_FLAGS="-DLA_SANITIZE=ON"

# The suite with the token loops in baseline x86-64 code (no AVX-512/AVX2 clones) and without
# OpenMP: the code paths CPUs without AVX-512 and single-threaded builds take.
test-portable:
	@$(MAKE) --no-print-directory test BUILD=build-portable CMAKE_FLAGS="-DLA_NO_CLONES=ON -DLA_OPENMP=OFF"

bench: build
	./$(BUILD)/linattn bench --csv $(BUILD)/bench.csv

install: build
	cmake --install $(BUILD) --prefix $(PREFIX)

clean:
	rm -rf build build-asan build-portable
