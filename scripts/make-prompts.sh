#!/usr/bin/env bash
# Regenerate the default prompts in prompts/ as real speech: espeak-ng speaks
# each text, sox turns it into 8 kHz mono 16-bit WAV (no dither).
# Needs: apt-get install espeak-ng sox. The WAVs are committed; run this only
# to change a text.
set -euo pipefail
cd "$(dirname "$0")/../prompts"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
say() { # name text
  espeak-ng -v en-us -s 175 -w "$tmp/$1.wav" "$2"
  sox -D "$tmp/$1.wav" -r 8000 -c 1 -b 16 -e signed-integer "$1.wav" norm -3
  printf '%-16s %5.2fs  %s\n' "$1" "$(soxi -D "$1.wav")" "$2"
}
say greeting "Thanks for calling. Everyone is helping other customers right now, but we will take your details and call you right back."
say name "Please say your name."
say need "In a few words, what can we help you with?"
say callback_number "Enter your callback number, then pound. Or press 1 for this number."
say zip "Please enter your five digit zip code."
say urgency "For an emergency, press 1. This week, 2. Just a quote, 3."
say sorry "Sorry, I did not get that."
say goodbye "Thank you. Someone will call you back shortly. Goodbye."
# For the day/night example (config/examples/plumber.toml): the night
# greeting with the emergency option, and the two sides of a transfer.
say closed "Thanks for calling. We are closed right now. If this is an emergency, press 1. Otherwise, stay on the line and we will take your details."
say connecting "Connecting you to our on-call technician now."
say transfer_failed "We could not reach the technician. We will call you back within fifteen minutes. Please leave your details."
