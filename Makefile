# wavemamba: the README's two commands are `make demo` and `make test`.
# Both install what is missing first (scripts/setup.sh, idempotent).
SHELL := /bin/bash
CARGO ?= cargo
FEATURES ?=
ifeq ($(CUDA),1)
FEATURES := --features cuda
endif
BIN := target/release/wavemamba

.PHONY: setup build demo test fmt gpu-bundle clean

setup:
	@./scripts/setup.sh

build: setup
	$(CARGO) build --release $(FEATURES)

## main job on the bundled default (see README)
demo: build
	@./scripts/demo.sh

## the whole test suite (CI runs this through .ci/run)
test: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) build --release $(FEATURES)
	$(CARGO) test --release $(FEATURES)

fmt:
	$(CARGO) fmt --all

## binaries + test executables built with --features cuda, to run on the GPU machine
gpu-bundle:
	CUDA=1 ./scripts/setup.sh
	./scripts/gpu-bundle.sh

clean:
	$(CARGO) clean
