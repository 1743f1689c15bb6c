#!/usr/bin/env bash
# Regenerates the built-in IVR prompts as headerless 8 kHz mono G.711 mu-law files (`.ul`).
#
# Why committed binaries and not runtime TTS: the IVR must speak on a machine with no TTS engine,
# and CI must not depend on espeak-ng's version (its output changes between releases). Run this
# by hand when a wording changes, listen to the result (`play -t ul -r 8000 -c 1 FILE.ul`), and
# commit the .ul files. CI never runs it.
#
# Needs: espeak-ng, sox. Each clip is trimmed of leading/trailing silence and padded with 80 ms
# so that concatenated clips ("Extension" "1" "0" "0" "1" "assigned") sound like one sentence.
set -euo pipefail
cd "$(dirname "$0")"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

say() { # say NAME TEXT
  espeak-ng -v en-us -s 150 -w "$tmp/$1.wav" "$2"
  sox "$tmp/$1.wav" -r 8000 -c 1 -t ul "$1.ul" \
    silence 1 0.02 0.5% reverse silence 1 0.02 0.5% reverse pad 0.08 0.08
}

say enter_extension "Please enter the extension, then press pound."
say extension "Extension"
say assigned "assigned."
say not_available "That extension is not available."
say try_again "Please try again."
say goodbye "Goodbye."
say try_later "The service is busy. Please call again later."
digits=(zero one two three four five six seven eight nine)
for i in "${!digits[@]}"; do
  say "digit_$i" "${digits[$i]}"
done
ls -l ./*.ul
du -cb ./*.ul | tail -1
