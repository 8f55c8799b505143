#!/usr/bin/env bash
# On the GPU machine: unpacks what benches/gpu_pack.sh packed and runs
# benches/gpu_bench.sh with it (colloquy alone: FASTER_WHISPER=0), from the
# repo's root there.
#
#   bash benches/gpu_unpack_run.sh PARTS [gpu_bench.sh args, e.g. --runs 1 --with-3h]
#
# PARTS: the folder holding every part.NN. Unpacked into $GPU_DIR (default
# /tmp/colloquy-gpu), once. The CUDA libraries the onnxruntime-gpu build
# needs (cuBLAS, cuDNN 9, cuRAND, cuFFT, the CUDA runtime) are looked for
# under /opt, /usr/local and /usr/lib and put on LD_LIBRARY_PATH. The GPU's
# load and memory are logged once a second to $GPU_DIR/smi.csv meanwhile.
set -euo pipefail
cd "$(dirname "$0")/.."
PARTS=${1:?usage: gpu_unpack_run.sh PARTS [args]}
shift
G=${GPU_DIR:-/tmp/colloquy-gpu}
if [ ! -f "$G/.unpacked" ]; then
  rm -rf "$G" && mkdir -p "$G"
  cat "$PARTS"/part.* | tar xf - -C "$G"
  find "$G" -name '*.xz' -print0 | xargs -0 -n 1 -P "$(nproc)" xz -d -T1
  # long3h: long45 four times, as benches/make_long_audio.sh makes it
  python3 - "$G/audio" <<'PY'
import sys, wave
d = sys.argv[1]
src = wave.open(f"{d}/long45.wav")
frames = src.readframes(src.getnframes())
out = wave.open(f"{d}/long3h.wav", "wb")
out.setparams(src.getparams())
for _ in range(4):
    out.writeframes(frames)
out.close()
PY
  touch "$G/.unpacked"
fi
(cd "$G/audio" && sha256sum ./*.wav)
libs=$(find /opt /usr/local /usr/lib -xdev \( -name 'libcublas.so.1[23]' -o -name 'libcublasLt.so.1[23]' \
  -o -name 'libcudnn.so.9' -o -name 'libcurand.so.10' -o -name 'libcudart.so.1[23]' -o -name 'libcufft.so.1[12]' \) \
  2>/dev/null | xargs -r -n1 dirname | sort -u | paste -sd:)
echo "CUDA libraries: $libs" >&2
export LD_LIBRARY_PATH="$libs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 >"$G/smi.csv" 2>/dev/null &
smi=$!
trap 'kill $smi 2>/dev/null || true' EXIT
ort=$(ls "$G"/ort/libonnxruntime.so.1.* | head -1)
model=$(basename "$(ls -d "$G"/cache/v1/models/whisper-*)"); model=${model#whisper-}
ORT_GPU_LIB=$ort FASTER_WHISPER=0 COLLOQUY_BIN=$G/bin/colloquy COLLOQUY_CACHE=$G/cache GPU_MODEL=$model \
  bash benches/gpu_bench.sh --audio "$G/audio" --manifest "$G/asr_manifest.tsv" "$@"
