#!/bin/sh
# Remakes the replay sample in docs/replay/ from a fresh live run: the
# OpenSIPS test records its traffic (RSEC_REPLAY_KEEP), then rsec-replay
# reports on it, draws it and compares it with a doubled density.
# Needs what `make test` needs for the OpenSIPS tests.
set -eu
cd "$(dirname "$0")/.."
make build
keep=$(mktemp -d)
RSEC_SO="$PWD/target/rsec.so" RSEC_REQUIRE_OPENSIPS=1 RSEC_REPLAY_KEEP="$keep" \
    cargo test --release --test it opensips_operators::replay -- --test-threads=1
cp "$keep/live.pcap" docs/replay/attack.pcap
cp "$keep/live-vs-replay.txt" docs/replay/live-vs-replay.txt
rm -rf "$keep"
cd docs/replay
../../target/rsec-replay --cfg rsec.cfg --picture replay.svg attack.pcap >report.txt
../../target/rsec-replay --cfg rsec.cfg --compare-set pike_density=60 \
    --picture compare.svg attack.pcap >compare.txt
if command -v rsvg-convert >/dev/null; then
    rsvg-convert -w 1400 replay.svg -o replay.png
    rsvg-convert -w 1400 compare.svg -o compare.png
fi
