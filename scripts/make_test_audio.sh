#!/usr/bin/env bash
# Regenerates tests/data/speech_en*.flac, the committed speech clips the
# integration tests transcribe (espeak-ng 1.51 and sox, Debian packages).
# The Opus files (tests/data/jfk*) come from scripts/make_opus_audio.sh.
set -euo pipefail
cd "$(dirname "$0")/../tests/data"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
espeak-ng -v en-us -s 150 -w "$tmp/raw.wav" \
  "Good morning everyone, thank you for coming to the meeting today. We will talk about the budget for next year, and then we will plan the summer trip."
sox "$tmp/raw.wav" -r 16000 -c 1 -b 16 speech_en.flac
sox "$tmp/raw.wav" -r 44100 -c 2 -b 16 speech_en_44k_stereo.flac

# tests/data/two_voices.flac + two_voices.rttm: two espeak-ng voices (en-us
# and en-us+f3) taking turns, 0.6 s apart; the RTTM holds the exact turns,
# the STM who said what.
lines=(
  "en-us|Hello, thanks for calling the clinic. How can I help you today?"
  "en-us+f3|Hi, I would like to book an appointment for next week, if possible."
  "en-us|Of course. Would Tuesday morning at nine work for you?"
  "en-us+f3|Tuesday is difficult. Do you have anything on Thursday afternoon?"
  "en-us|Yes, we have an opening at three thirty on Thursday."
  "en-us+f3|Perfect, please put me down for that time. Thank you so much."
)
t=0
parts=()
: > two_voices.rttm
: > two_voices.stm
sox -n -r 16000 -c 1 -b 16 "$tmp/gap.wav" trim 0 0.6
for i in "${!lines[@]}"; do
  voice=${lines[$i]%%|*}
  text=${lines[$i]#*|}
  espeak-ng -v "$voice" -s 150 -w "$tmp/raw$i.wav" "$text"
  sox "$tmp/raw$i.wav" -r 16000 -c 1 -b 16 "$tmp/p$i.wav"
  d=$(soxi -D "$tmp/p$i.wav")
  speaker=$([ "$voice" = en-us ] && echo alice || echo bob)
  printf "SPEAKER two_voices 1 %.3f %.3f <NA> <NA> %s <NA> <NA>\n" "$t" "$d" "$speaker" >> two_voices.rttm
  printf "two_voices 1 %s %.3f %.3f %s\n" "$speaker" "$t" "$(python3 -c "print($t + $d)")" "$text" >> two_voices.stm
  t=$(python3 -c "print($t + $d + 0.6)")
  parts+=("$tmp/p$i.wav" "$tmp/gap.wav")
done
sox "${parts[@]}" two_voices.flac
