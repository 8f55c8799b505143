#!/usr/bin/env bash
# Regenerates tests/data/speech_en*.flac, the committed speech clips the
# integration tests transcribe (espeak-ng 1.51 and sox, Debian packages).
set -euo pipefail
cd "$(dirname "$0")/../tests/data"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-us -s 150 -w "$tmp/raw.wav" \
  "Good morning everyone, thank you for coming to the meeting today. We will talk about the budget for next year, and then we will plan the summer trip."
sox "$tmp/raw.wav" -r 16000 -c 1 -b 16 speech_en.flac
sox "$tmp/raw.wav" -r 44100 -c 2 -b 16 speech_en_44k_stereo.flac
