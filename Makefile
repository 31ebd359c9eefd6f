# SPDX-License-Identifier: Apache-2.0
# Thin wrapper over cmake/ctest. `make demo` and `make test` are the quick start.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc)
CTEST_FLAGS ?= --output-on-failure

.PHONY: all deps build test unit e2e demo fuzz torture bench install clean format asan

all: build

deps:
	@scripts/install-deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j$(JOBS)

test: build
	cd $(BUILD) && ctest $(CTEST_FLAGS)

unit: build
	cd $(BUILD) && ctest -L unit $(CTEST_FLAGS)

e2e: build
	cd $(BUILD) && ctest -L e2e $(CTEST_FLAGS)

asan: deps
	cmake -S . -B build-asan -DBERTH_SANITIZE=ON -DBERTH_WERROR=ON
	cmake --build build-asan -j$(JOBS)
	cd build-asan && ctest -L unit $(CTEST_FLAGS)

demo: build
	@scripts/demo.sh $(BUILD)

fuzz: deps
	cmake -S . -B build-fuzz -DBERTH_FUZZ=ON -DCMAKE_C_COMPILER=clang
	cmake --build build-fuzz -j$(JOBS)
	@scripts/fuzz.sh build-fuzz $${FUZZ_SECONDS:-60}

torture: build
	@scripts/torture.sh $(BUILD)

bench: build
	@for b in bench/bench_*.sh; do echo "== $$b"; bash $$b $(BUILD) || exit 1; done

install: build
	cmake --install $(BUILD)

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) build-asan build-fuzz
