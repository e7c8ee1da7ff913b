# crossfold: the two commands a new user needs are `make demo` and `make test`.
# Both install what they need on first use (libtorch from PyPI into .venv/).

SHELL := /bin/bash
CARGO ?= cargo
ENV := . scripts/env.sh &&

.PHONY: demo test setup build bench gpu-bundle lint fmt clean-data

## Run the main job on the built-in default data (the synthetic cohort of the
## paper's Table 1): the paper's 5 screening + 10 malignancy rounds, with an
## embedded coordinator and one local worker per GPU (one CPU worker without
## a GPU); results in out/paper.
demo: setup
	$(ENV) $(CARGO) build --release --workspace
	./target/release/crossfold run examples/paper.toml --out out/paper

## Run every test (unit, property and integration) in the workspace.
test: setup
	$(ENV) CARGO_INCREMENTAL=$${CARGO_INCREMENTAL:-0} $(CARGO) test --workspace

## Install libtorch (PyTorch 2.11.0 from PyPI) into .venv/ when missing.
setup:
	@bash scripts/setup-libtorch.sh

build: setup
	$(ENV) $(CARGO) build --workspace

## Training throughput of crossfold against the PyTorch reference (bench/README.md).
bench: setup
	bash bench/run.sh

## What a GPU machine without cargo needs (bench/gpu.sh): the release
## binaries and the GPU tests (worker/tests/gpu.rs) as
## target/release/crossfold-gpu-tests.
gpu-bundle: setup
	$(ENV) $(CARGO) build --release --workspace
	set -o pipefail; $(ENV) $(CARGO) test --release -p crossfold-worker --test gpu --no-run 2>&1 | tee target/gpu-bundle.log
	exe=$$(grep -o 'target/release/deps/gpu-[0-9a-f]*' target/gpu-bundle.log | tail -1) && \
	  test -n "$$exe" && cp "$$exe" target/release/crossfold-gpu-tests
	@ls -l target/release/crossfold target/release/crossfold-worker target/release/crossfold-gpu-tests

lint: setup
	$(CARGO) fmt --all -- --check
	$(ENV) $(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

clean-data:
	rm -rf out
