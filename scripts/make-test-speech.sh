#!/usr/bin/env bash
# Regenerate the callers' spoken answers used by the intake tests, in
# tests/fixtures/speech/: espeak-ng speaks, sox makes 8 kHz mono 16-bit WAV
# (no dither) and trims the silence at both ends, so a file's length is the
# length of its speech. Needs: apt-get install espeak-ng sox. The WAVs are
# committed; run this only to change a text.
set -euo pipefail
cd "$(dirname "$0")/../tests/fixtures/speech"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() { # out voice text
  espeak-ng -v "$2" -s 160 -w "$tmp/raw.wav" "$3"
  sox -D "$tmp/raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$tmp/$1.wav" norm -6 \
    silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse
}
say name en-us+m3 "Jordan Alvarez"
say need1 en-us+f2 "The water heater is leaking"
say need2 en-us+f2 "all over the basement floor"
# One answer with a 0.6 s pause inside (shorter than the 1.2 s end-of-speech silence).
sox -D "$tmp/need1.wav" -p pad 0 0.6 | sox -D - "$tmp/need2.wav" -r 8000 -c 1 -b 16 -e signed-integer need.wav
cp "$tmp/name.wav" name.wav
cp "$tmp/need1.wav" need_first.wav
cp "$tmp/need2.wav" need_second.wav
for f in *.wav; do printf '%-18s %5.2fs\n' "$f" "$(soxi -D "$f")"; done
