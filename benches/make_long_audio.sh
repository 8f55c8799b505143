#!/usr/bin/env bash
# Long recordings for `make bench` (issue #11), built with sox from the shared
# data set (../shared/data): 16 kHz mono 16-bit WAV in target/bench/audio/.
#   joined14.wav  the 14 single-speaker clips joined (0.5 s pauses), ~168 s:
#                 Whisper alone against faster-whisper, WER on the joins;
#   long45.wav    every shared recording (clips, AMI meetings, the Picovoice
#                 three-voice files, conv1, realmix1) joined with 0.5 s pauses,
#                 repeated to 45 minutes: the whole pipeline on a long meeting;
#   long3h.wav    long45 four times: 3 hours, memory stays bounded.
# Cached: a file that exists is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${SHARED_DATA:-../shared/data}
OUT=target/bench/audio
mkdir -p "$OUT"
command -v sox >/dev/null || { echo "sox is needed (apt-get install sox)" >&2; exit 1; }
[ -d "$DATA" ] || { echo "no shared data at $DATA" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sox -n -r 16000 -c 1 -b 16 "$tmp/pause.wav" trim 0 0.5

# every input as 16 kHz mono 16-bit, each followed by a pause
norm() { sox "$1" -r 16000 -c 1 -b 16 "$2" remix - 2>/dev/null || sox "$1" -r 16000 -c 1 -b 16 "$2"; }

clips=()
while IFS=$'\t' read -r id path group _; do
  [ "$id" = id ] && continue
  [ "$group" = single ] || continue
  norm "$DATA/$path" "$tmp/clip_$id.wav"
  clips+=("$tmp/clip_$id.wav" "$tmp/pause.wav")
done < "$DATA/asr_manifest.tsv"

if [ ! -f "$OUT/joined14.wav" ]; then
  sox "${clips[@]}" "$OUT/joined14.wav"
fi

if [ ! -f "$OUT/long45.wav" ]; then
  set_=("${clips[@]}")
  for f in diarization/ami_dev00.wav diarization/ami_dev01.wav diarization/ami_tst00.wav diarization/ami_tst01.wav \
           diarization/picovoice_falcon_test.wav diarization/picovoice_leopard_diarization_test.wav \
           synthetic/conv1.wav mix/realmix1.wav; do
    b=$(basename "$f" .wav)
    norm "$DATA/$f" "$tmp/m_$b.wav"
    set_+=("$tmp/m_$b.wav" "$tmp/pause.wav")
  done
  sox "${set_[@]}" "$tmp/one.wav"
  one=$(soxi -D "$tmp/one.wav")
  reps=$(python3 -c "import math; print(math.ceil(2700 / $one))")
  args=()
  for _ in $(seq "$reps"); do args+=("$tmp/one.wav"); done
  sox "${args[@]}" "$OUT/long45.wav" trim 0 2700
fi

if [ ! -f "$OUT/long3h.wav" ]; then
  sox "$OUT/long45.wav" "$OUT/long45.wav" "$OUT/long45.wav" "$OUT/long45.wav" "$OUT/long3h.wav"
fi

for f in joined14 long45 long3h; do
  printf '%s\t%.1f s\n' "$OUT/$f.wav" "$(soxi -D "$OUT/$f.wav")"
done
