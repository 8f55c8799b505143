#!/usr/bin/env bash
# Regenerates tests/data/formats/clip.{wav,flac,mp3,ogg,m4a}: the first 4 s of
# tests/data/speech_en.flac (espeak-ng speech, ours) in each container the
# hostile-input suite (scripts/hostile.py) truncates and corrupts. Needs
# ffmpeg (Debian's `ffmpeg`), only to regenerate them: the clips are committed.
set -euo pipefail
cd "$(dirname "$0")/../tests/data/formats"
src=../speech_en.flac
ffmpeg -v error -y -i "$src" -t 4 -ac 1 -ar 16000 clip.wav
ffmpeg -v error -y -i "$src" -t 4 -ac 1 clip.flac
ffmpeg -v error -y -i "$src" -t 4 -ac 1 -b:a 32k clip.mp3
ffmpeg -v error -y -i "$src" -t 4 -ac 1 -c:a libvorbis -q:a 1 clip.ogg
ffmpeg -v error -y -i "$src" -t 4 -ac 1 -c:a aac -b:a 32k clip.m4a
ls -l
