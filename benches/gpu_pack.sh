#!/usr/bin/env bash
# Packs what benches/gpu_bench.sh needs on a GPU machine that reaches no
# registry and cannot build (issue #11): the release binary, an
# onnxruntime-gpu build's libraries, the installed models and the bench audio,
# xz-compressed, in parts of at most PART_MB MiB each, one folder per part, so
# that each part can travel on its own:
#
#   bash benches/gpu_pack.sh OUTDIR          (after make setup, make build)
#     OUTDIR/p00/part.00, OUTDIR/p01/part.01, ...
#
# There, with every part's file gathered in one folder PARTS:
#   bash benches/gpu_unpack_run.sh PARTS [gpu_bench.sh args, e.g. --runs 1]
#
#   PART_MB=50            the size of a part (MiB)
#   GPU_MODEL=tiny.en     the Whisper model packed (its fp32 files)
#   ORT_GPU=onnxruntime-gpu==1.31.1   the wheel the libraries come from (1.31.1
#                         is a CUDA 13 build, 1.26.0 the last CUDA 12 one)
# The H200 run in the README ("GPU") went this way: 6 parts of 52 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
OUTDIR=${1:?usage: gpu_pack.sh OUTDIR}
PART_MB=${PART_MB:-50}
MODEL=${GPU_MODEL:-tiny.en}
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}
CACHE=${COLLOQUY_CACHE:-$HOME/.cache/colloquy}/v1
PY=$CACHE/venv/bin/python
[ -x target/release/colloquy ] || { echo "no target/release/colloquy: make build first" >&2; exit 1; }
[ -f "$CACHE/models/whisper-$MODEL/model.json" ] || { echo "no whisper-$MODEL under $CACHE/models: make setup first" >&2; exit 1; }
bash benches/make_long_audio.sh >/dev/null

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,ort,audio,wheel} "$stage/cache/v1/models/whisper-$MODEL"

# the onnxruntime-gpu wheel's libraries: the core and its providers
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 -d "$stage/wheel" "$ORT_GPU"
"$PY" - "$stage/wheel" "$stage/ort" <<'EOF'
import sys, zipfile, pathlib
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    for n in z.namelist():
        if n.startswith("onnxruntime/capi/libonnxruntime") and ".so" in n:
            (pathlib.Path(sys.argv[2]) / pathlib.Path(n).name).write_bytes(z.read(n))
EOF
rm -rf "$stage/wheel" "$stage"/ort/libonnxruntime_providers_tensorrt.so

strip -o "$stage/bin/colloquy" target/release/colloquy
m=$CACHE/models
cp -a "$m/vad" "$m/diarization" "$stage/cache/v1/models/"
for f in model.json ct2_config.json manifest.json tokenizer.json encoder.onnx decoder.onnx; do
  cp "$m/whisper-$MODEL/$f" "$stage/cache/v1/models/whisper-$MODEL/"
done
cp target/bench/audio/joined14.wav target/bench/audio/long45.wav "$stage/audio/"
manifest=${SHARED_DATA:-../shared/data}/asr_manifest.tsv
cp "$manifest" "$stage/"

# big files compressed (ONNX weights converted from fp16 shrink to about half)
find "$stage" -type f \( -name '*.onnx' -o -name '*.so*' -o -name '*.wav' -o -name colloquy -o -name tokenizer.json \) \
  ! -name libonnxruntime_providers_shared.so -print0 | xargs -0 -n 1 -P 2 xz -6 -T1

rm -rf "$OUTDIR"
mkdir -p "$OUTDIR"
tar cf - -C "$stage" . | split -b "${PART_MB}M" -d - "$OUTDIR/part."
for p in "$OUTDIR"/part.*; do
  d=$OUTDIR/p${p##*.}
  mkdir -p "$d" && mv "$p" "$d/"
done
ls -l "$OUTDIR"/p*/ | grep part
