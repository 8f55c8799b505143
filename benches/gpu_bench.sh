#!/usr/bin/env bash
# The long-recording bench (benches/long_vs_faster_whisper.py) on an NVIDIA
# GPU, issue #11: colloquy with the CUDA execution provider, faster-whisper
# with device="cuda", both fp32 on the same CTranslate2 weights.
#
#   bash benches/gpu_bench.sh [long_vs_faster_whisper.py args, e.g. --runs 3 --with-3h]
#   GPU_MODEL=base bash benches/gpu_bench.sh      (default tiny.en)
#
# On a machine that reaches no registry and has its own CUDA (e.g. CUDA 13,
# where the pinned CUDA 12 stack does not fit):
#   ORT_GPU_LIB=/x/libonnxruntime.so.1.31.1   an onnxruntime-gpu build for that
#       CUDA (its libonnxruntime_providers_*.so beside it); no venv is made,
#       the CUDA libraries come from LD_LIBRARY_PATH as it is;
#   FASTER_WHISPER=0   colloquy alone (CTranslate2's wheels need CUDA 12's
#       cuBLAS and cuDNN);
#   COLLOQUY_BIN=/x/colloquy   a binary built elsewhere (default target/release);
#   args such as --audio DIR --manifest TSV go on to the bench.
#
# What it does:
#  1. says so and exits 3 when there is no NVIDIA GPU (nvidia-smi missing or
#     listing none): nothing is measured then;
#  2. installs onnxruntime-gpu 1.26.0 (the last CUDA 12 build; the `ort`
#     crate's api-26 runs on it) and the NVIDIA CUDA 12 runtime wheels from
#     PyPI into $COLLOQUY_CACHE/v1/venv-gpu (once); their lib folders go on
#     LD_LIBRARY_PATH, where CTranslate2 finds the same cuBLAS and cuDNN;
#  3. sizes whisper.batch_size for the card: half the free memory over what
#     one row of a batch holds (the cross-attention keys and values of its
#     window and one encoder layer's attention scores, from model.json),
#     at most 32;
#  4. runs the bench with COLLOQUY__RUNTIME__DEVICE=cuda, that batch size,
#     and faster-whisper batched at the same size. colloquy logs "cuda
#     execution provider unavailable" and runs on the CPU if the provider
#     does not load: the script stops then, rather than report CPU figures.
# Needs `make setup` and `make build` first (models, the binary).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${GPU_MODEL:-tiny.en}
CACHE=${COLLOQUY_CACHE:-$HOME/.cache/colloquy}/v1
ORT_GPU=onnxruntime-gpu==1.26.0
NVIDIA_WHEELS=(nvidia-cuda-runtime-cu12 nvidia-cublas-cu12 "nvidia-cudnn-cu12>=9,<10" nvidia-curand-cu12 nvidia-cufft-cu12)

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L 2>/dev/null | grep -q '^GPU'; then
  echo "no NVIDIA GPU here (nvidia-smi missing or listing none): nothing measured" >&2
  exit 3
fi
nvidia-smi -L >&2

if [ -n "${ORT_GPU_LIB:-}" ]; then
  lib=$ORT_GPU_LIB
else
  venv=$CACHE/venv-gpu
  if [ ! -f "$venv/.installed" ]; then
    python3 -m venv "$venv"
    # GPU_WHEELS=DIR: install from wheels downloaded beforehand (`pip download
    # -d DIR` of the same requirements) on a machine that reaches no registry
    "$venv/bin/pip" install -q ${GPU_WHEELS:+--no-index --find-links "$GPU_WHEELS"} "$ORT_GPU" "${NVIDIA_WHEELS[@]}"
    touch "$venv/.installed"
  fi
  site=$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
  lib=$(ls "$site"/onnxruntime/capi/libonnxruntime.so.* | head -1)
  nvlibs=$(ls -d "$site"/nvidia/*/lib | paste -sd: -)
  export LD_LIBRARY_PATH="$nvlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
BIN=${COLLOQUY_BIN:-./target/release/colloquy}

# batch size: half the free memory over one row's share
free_mb=$(nvidia-smi --query-gpu=memory.free --format=csv,noheader,nounits -i "${CUDA_DEVICE:-0}" | head -1)
batch=$(python3 - "$CACHE/models/whisper-$MODEL/model.json" "$free_mb" <<'EOF'
import json, sys
m = json.load(open(sys.argv[1]))
free = float(sys.argv[2]) * 2**20
ctx, d = m["n_audio_ctx"], m["d_model"]
cross = 2 * m["n_decoder_layers"] * ctx * d * 4          # keys and values, fp32
scores = m["n_heads"] * ctx * ctx * 4                       # one encoder layer's attention
print(max(1, min(32, int(free / 2 // (cross + scores)))))
EOF
)
echo "model $MODEL, $free_mb MiB free: batch $batch" >&2

export COLLOQUY__RUNTIME__DEVICE=cuda
export COLLOQUY__MODELS__ONNXRUNTIME=$lib
export COLLOQUY__WHISPER__BATCH_SIZE=$batch
export COLLOQUY__WHISPER__MODEL=$MODEL
check=$(COLLOQUY_LOG=warn "$BIN" transcribe --whisper-only --format json tests/data/speech_en.flac 2>&1 >/dev/null || true)
if grep -q "falling back to cpu" <<<"$check"; then
  echo "the CUDA execution provider did not load: $check" >&2
  exit 4
fi
fw=()
[ "${FASTER_WHISPER:-1}" = 0 ] && fw=(--no-faster-whisper)
python3 benches/long_vs_faster_whisper.py --device cuda --batch "$batch" --model "$MODEL" --colloquy "$BIN" \
  "${fw[@]}" --json target/bench/long_vs_faster_whisper_gpu.json "$@"
