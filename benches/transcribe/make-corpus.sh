#!/usr/bin/env bash
# Regenerate the transcription bench's corpus (benches/transcribe/*.wav and
# corpus.tsv): callers' answers to "What is your name?" and "What do you
# need help with?", each spoken by three espeak-ng voices, as they reach
# Backstop's recorder from a phone (and two answers with no speech): 8 kHz, -6 dBFS peak, 0.3 s of lead-in
# and 0.5 s of tail, steady line noise at -50 dBFS RMS (pink, 300-3400 Hz)
# under the whole clip, then G.711 μ-law. The committed files are the μ-law
# WAVs (8 kB per second, as a recording with `format = "ulaw"` is written);
# reading one back decodes the μ-law, which closes the round trip.
#
# Needs: apt-get install espeak-ng sox. Deterministic for a given
# espeak-ng and sox (noise from sox -R). The files are committed; run this
# only to change the corpus. Do not point it at tests/fixtures/speech/:
# those clips are kept out of engine choices for an end-to-end test.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# id  voice  speed(words/min). Different sexes, accents and speeds.
VOICES=(
  "a en-us+m3 160"
  "b en-gb+f3 140"
  "c en-029+m7 185"
)

NAMES=(
  "Maria Gonzalez"
  "John Smith"
  "Priya Patel"
  "This is Kevin O'Brien"
  "Aisha Mohammed"
  "Daniel Kowalski"
  "Mei Chen"
  "My name is Robert Johnson"
  "Fatima Hassan"
  "Luis Hernandez"
  "It's Sarah Thompson"
  "Tyrone Washington"
)

NEEDS=(
  "My furnace stopped working and there is a baby at home."
  "The basement is flooding."
  "The water heater is leaking."
  "My kitchen sink is clogged and the water will not drain."
  "The air conditioner is blowing warm air."
  "There is a burning smell coming from the electrical panel."
  "The toilet keeps running and it overflowed this morning."
  "A pipe burst under the bathroom sink."
  "We have had no hot water since yesterday."
  "The breaker keeps tripping when I run the microwave."
  "I smell gas near the stove."
  "The thermostat says fifty five degrees and the heat will not come on."
)

# 30 s of line noise, scaled to -50 dBFS RMS once; each clip takes its own stretch.
sox -D -R -n -r 8000 -c 1 -b 16 -e signed-integer "$tmp/noise0.wav" synth 30 pinknoise sinc 300-3400
rms=$(sox -D "$tmp/noise0.wav" -n stats 2>&1 | awk '/^RMS lev dB/ {print $4}')
sox -D "$tmp/noise0.wav" "$tmp/noise.wav" gain "$(awk -v r="$rms" 'BEGIN {printf "%.2f", -50 - r}')"

rm -f -- *.wav corpus.tsv
printf 'file\tkind\tvoice\ttext\n' >corpus.tsv
offset=0
say() { # kind index text
  local kind=$1 idx=$2 text=$3 v id voice speed out len
  for v in "${VOICES[@]}"; do
    read -r id voice speed <<<"$v"
    out=$(printf '%s%02d%s.wav' "$kind" "$idx" "$id")
    espeak-ng -v "$voice" -s "$speed" -w "$tmp/raw.wav" "$text"
    # 8 kHz, speech trimmed to its own length, then the lead-in and tail.
    sox -D "$tmp/raw.wav" -r 8000 -c 1 -b 16 -e signed-integer "$tmp/speech.wav" norm -6 \
      silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse pad 0.3 0.5
    len=$(soxi -s "$tmp/speech.wav")
    sox -D "$tmp/noise.wav" "$tmp/n.wav" trim "${offset}s" "${len}s"
    offset=$(((offset + len) % (20 * 8000)))
    sox -D -m -v 1 "$tmp/speech.wav" -v 1 "$tmp/n.wav" -r 8000 -c 1 -e u-law -b 8 "$out"
    printf '%s\t%s\t%s\t%s\n' "$out" "$kind" "$voice@$speed" "$text" >>corpus.tsv
  done
}
i=0
for t in "${NAMES[@]}"; do i=$((i + 1)); say name "$i" "$t"; done
i=0
for t in "${NEEDS[@]}"; do i=$((i + 1)); say need "$i" "$t"; done
# Answers with no speech at all, only the line noise: the reference is empty,
# and every word an engine writes is invented.
i=0
for secs in 1.5 4; do
  i=$((i + 1))
  out=$(printf 'empty%02d.wav' "$i")
  sox -D "$tmp/noise.wav" -r 8000 -c 1 -e u-law -b 8 "$out" trim "${offset}s" "$secs"
  offset=$((offset + 5 * 8000))
  printf '%s\t%s\t%s\t%s\n' "$out" empty "line noise" "" >>corpus.tsv
done

total=0
for f in *.wav; do total=$(awk -v a="$total" -v b="$(soxi -D "$f")" 'BEGIN {print a + b}'); done
printf '%d clips, %.1f s of audio, %s\n' "$(ls *.wav | wc -l)" "$total" "$(du -ch *.wav | tail -1 | cut -f1)"
