#!/usr/bin/env bash
# Regenerates tests/data/jfk.opus, jfk_opus.webm and jfk_opus.mkv: the JFK
# inaugural address excerpt ("And so my fellow Americans, ask not ...", 11 s;
# a 1961 speech by a US president, public domain) from the shared data set,
# as Opus, mono, 24 kb/s, in Ogg, WebM and Matroska (the test inputs of the
# Opus decoder: tests/audio.rs). Needs ffmpeg with libopus (Debian's ffmpeg
# package) and ../shared/data beside the checkout; ffmpeg is needed only here,
# not to build or test Colloquy.
set -euo pipefail
cd "$(dirname "$0")/.."
src=${1:-../shared/data/asr/whisper_jfk.flac}
out=tests/data
opus=(-hide_banner -loglevel error -y -i "$src" -map_metadata -1 -fflags +bitexact
      -flags:a +bitexact -ac 1 -c:a libopus -b:a 24k)
ffmpeg "${opus[@]}" -f ogg "$out/jfk.opus"
ffmpeg "${opus[@]}" -f webm "$out/jfk_opus.webm"
ffmpeg "${opus[@]}" -f matroska "$out/jfk_opus.mkv"
ls -l "$out"/jfk.opus "$out"/jfk_opus.webm "$out"/jfk_opus.mkv
