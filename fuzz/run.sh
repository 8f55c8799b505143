#!/usr/bin/env bash
# make fuzz: runs the cargo-fuzz target `decode` (fuzz/fuzz_targets/decode.rs:
# any bytes through audio::load_16k_mono_from_bytes) for FUZZ_SECONDS
# (default 600), and ends with one line:
#   fuzz: PASS decode 600 s, N execs, corpus K files, 0 crashes, P decoder panics caught
#   fuzz: FAIL decode ... (crash file: fuzz/artifacts/decode/crash-...)
# exiting non-zero on a crash. Installs cargo-fuzz (cargo install --locked)
# and cmake (scripts/setup.sh --build-tools) when missing.
#
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address, ...): with the
# stable toolchain, RUSTC_BOOTSTRAP=1 lets rustc take them.
#
# Corpus: target/fuzz/corpus/decode (kept between runs, never committed),
# seeded each time from the committed clips in tests/data (whole when under
# -max_len, and their first 4 and 16 KB) and, when sox is installed, short
# WAV (PCM, float, u-law, A-law, ADPCM), MP3, Ogg Vorbis, FLAC and AIFF
# encodings of a clip. Inputs that made symphonia or the Opus adapter panic
# in this run (caught by audio.rs: not failures) are kept in
# target/fuzz/caught, one per place in the code, with the place and message
# beside each (.txt). libFuzzer's output: target/fuzz/decode.log.
set -uo pipefail
cd "$(dirname "$0")/.."

FUZZ_SECONDS=${FUZZ_SECONDS:-600}
MAX_LEN=65536
RSS_LIMIT_MB=2048
OUT=target/fuzz
CORPUS=$OUT/corpus/decode
CAUGHT=$OUT/caught
LOG=$OUT/decode.log

fail() { echo "fuzz: FAIL decode: $*"; exit 1; }

export RUSTC_BOOTSTRAP=1
command -v cmake >/dev/null || bash scripts/setup.sh --build-tools >&2 || fail "cmake is missing and could not be installed"
if ! cargo fuzz --version >/dev/null 2>&1; then
  echo "fuzz: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked >&2 || fail "cargo install cargo-fuzz failed"
fi

mkdir -p "$CORPUS" "$CAUGHT"
rm -f "$CAUGHT"/caught-*   # this run's only
for f in tests/data/*.flac tests/data/*.wav tests/data/*.opus tests/data/*.webm tests/data/*.mkv; do
  [ -f "$f" ] || continue
  b=$(basename "$f")
  [ "$(stat -c %s "$f")" -gt $MAX_LEN ] || cp "$f" "$CORPUS/$b"
  head -c 4096 "$f" > "$CORPUS/$b.4k"
  head -c 16384 "$f" > "$CORPUS/$b.16k"
done
if command -v sox >/dev/null; then
  clip=tests/data/speech_en.flac
  seed() { local name=$1; shift; sox "$clip" "$@" 2>/dev/null || echo "fuzz: sox could not write $name (skipped)" >&2; }
  seed pcm   -r 16000 -c 1 -b 16 "$CORPUS/sox_pcm16.wav" trim 1 1
  seed u8    -r 8000 -c 1 -b 8 -e unsigned-integer "$CORPUS/sox_u8.wav" trim 1 1
  seed f32   -r 44100 -c 2 -b 32 -e floating-point "$CORPUS/sox_f32_stereo.wav" trim 1 0.1
  seed ulaw  -r 8000 -c 1 -e u-law "$CORPUS/sox_ulaw.wav" trim 1 1
  seed alaw  -r 8000 -c 1 -e a-law "$CORPUS/sox_alaw.wav" trim 1 1
  seed ima   -r 8000 -c 1 -e ima-adpcm "$CORPUS/sox_ima.wav" trim 1 1
  seed ms    -r 8000 -c 1 -e ms-adpcm "$CORPUS/sox_msadpcm.wav" trim 1 1
  seed mp3   -r 22050 -c 1 -C 32 "$CORPUS/sox.mp3" trim 1 2
  seed ogg   -r 16000 -c 1 -C 0 "$CORPUS/sox.ogg" trim 1 2
  seed flac  -r 16000 -c 2 "$CORPUS/sox_stereo.flac" trim 1 0.5
  seed aiff  -r 8000 -c 1 "$CORPUS/sox.aiff" trim 1 1
fi

echo "fuzz: building the decode target (instrumented, fuzz/target)" >&2
t0=$SECONDS
cargo fuzz build decode >&2 || fail "cargo fuzz build failed"
build_s=$((SECONDS - t0))

echo "fuzz: running decode for $FUZZ_SECONDS s (log: $LOG)" >&2
t0=$SECONDS
COLLOQUY_FUZZ_CAUGHT="$PWD/$CAUGHT" cargo fuzz run decode "$CORPUS" -- \
  -max_total_time="$FUZZ_SECONDS" -max_len=$MAX_LEN -rss_limit_mb=$RSS_LIMIT_MB \
  -timeout=20 -print_final_stats=1 > "$LOG" 2>&1
rc=$?
ran_s=$((SECONDS - t0))

execs=$(grep -o 'stat::number_of_executed_units: [0-9]*' "$LOG" | tail -n1 | grep -o '[0-9]*$')
files=$(find "$CORPUS" -type f | wc -l)
caught=$(find "$CAUGHT" -type f -name 'caught-*' ! -name '*.txt' | wc -l)
if [ $rc -eq 0 ]; then
  echo "fuzz: PASS decode $FUZZ_SECONDS s, ${execs:-?} execs, corpus $files files, 0 crashes, $caught decoder panics caught (build ${build_s} s)"
  exit 0
fi
artifact=$(grep -o 'Test unit written to [^ ]*' "$LOG" | tail -n1 | sed 's/^Test unit written to //')
artifact=${artifact#"$PWD"/}
what=$(grep -m1 '^fuzz-target: ' "$LOG" || grep -m1 -E '^==[0-9]+== ?ERROR: libFuzzer: ' "$LOG" || grep -m1 '^SUMMARY: ' "$LOG")
what=$(echo "$what" | sed 's/^fuzz-target: //; s/^==[0-9]*== \{0,1\}//' | cut -c1-240)
echo "fuzz: FAIL decode after $ran_s s, ${execs:-?} execs: ${what:-libFuzzer exited with $rc} (crash file: ${artifact:-none}; log: $LOG)"
exit 1
