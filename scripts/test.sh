#!/usr/bin/env bash
# The one test command: installs what the tests need, then runs every test.
#   SIPp (Debian package sip-tester) is the real peer of the interop tests,
#   Kamailio the registrar/proxy of the forward-on-no-answer tests (and the
#   Record-Route proxy of a transfer test); baresip the UA that carries out
#   the agent's REFER in the transfer tests;
#   sox is the G.711 reference the codec test compares against;
#   SIPVicious (svmap, svwar) scans the agent in the hostile-input tests;
#   tcpdump times the agent's RTP on the wire in the intake test and the load smoke;
#   cmake, clang and libclang-dev build whisper.cpp (the `whisper` feature), and
#   scripts/get-model.sh fetches and checks the model the transcription tests use;
#   chromium and chromium-driver (WebDriver) drive the lead inbox in a real browser;
#   Prometheus scrapes /metrics during a SIPp run, and its promtool checks the exposition;
#   PostgreSQL 15 (Debian's postgresql) is the cluster store's shared database, started by
#   the tests themselves on a loopback port in a temporary data directory;
#   Prism (npm, pinned in tests/contracts/) serves Twilio's published OpenAPI
#   description as a validating mock for the text-back contract test.
# Tests talk to loopback only. Run as root: apt-get on a fresh machine, and
# SIPp's pcap replay of the callers' speech (play_pcap_audio) opens a raw socket.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v svwar >/dev/null 2>&1 || missing+=(sipvicious)
command -v tcpdump >/dev/null 2>&1 || missing+=(tcpdump)
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || missing+=(kamailio)
command -v baresip >/dev/null 2>&1 || missing+=(baresip)
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v clang >/dev/null 2>&1 || missing+=(clang)
dpkg -s libclang-dev >/dev/null 2>&1 || missing+=(libclang-dev)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v npm >/dev/null 2>&1 || missing+=(npm)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
[ -x /usr/lib/postgresql/15/bin/postgres ] || missing+=(postgresql)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# What the build and the tests have to work with (a full disk fails a build in odd places).
df -h . | tail -n 1 | awk '{print "disk: " $4 " free of " $2}'

# Prism, for the text-back contract test: the pinned version, once.
if [ ! -x tests/contracts/node_modules/.bin/prism ]; then
  (cd tests/contracts && npm ci --no-audit --no-fund --loglevel=error)
fi
BACKSTOP_PRISM="$PWD/tests/contracts/node_modules/.bin/prism"
export BACKSTOP_PRISM

# One build, not incremental: CI starts from a clean clone, and incremental
# state only costs disk there.
export CARGO_INCREMENTAL=0

# The transcription tests' model: fetched, checked against its published checksum, cached.
BACKSTOP_TEST_MODEL="$(scripts/get-model.sh | tail -n 1)"
export BACKSTOP_TEST_MODEL
echo "transcription test model: $BACKSTOP_TEST_MODEL"

cargo build --locked --workspace --all-targets --all-features
cargo test --locked --workspace --all-features
# A small run of the load tool (release build): 200 noisy callers against the
# agent and against SIPp's own UAS, checked for failed calls, leads,
# descriptors and RTP, and failed on a gross regression: CPU per call over 2x
# the UAS's in the same run, or RSS per held call over 64 KiB (twice the
# target). 200 calls, not fewer, so that the agent's fixed memory (threads,
# SQLite's cache) does not pass for per-call memory. The targets themselves
# are printed, not asserted.
bash scripts/load --calls 200 --rate 50 --hold 10 --capture 4 --check
echo "all tests passed"
