#!/usr/bin/env bash
# The exact commands that made every committed sample capture. Run from anywhere:
#   pcap-replays/samples/make.sh [OUTDIR]     (default: this directory)
# with $PCAP_REPLAY pointing at the binary (default: target/release/pcap-replay, built first).
# The test `samples_are_reproducible` runs this and compares the bytes.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
out=${1:-$here}
bin=${PCAP_REPLAY:-}
if [ -z "$bin" ]; then
  (cd "$here/../.." && cargo build --release -q -p pcap-replays)
  bin="$here/../../target/release/pcap-replay"
fi
mkdir -p "$out"

# 40 symbols, 5,000 messages on lines A and B: 1% drops on each line, duplicates and
# reordering on B. Every message is on at least one line except where both dropped it.
"$bin" generate --seed 7 --symbols 40 --messages 5000 --rate 20000 \
  --faults-a drop=0.01 --faults-b drop=0.01,dup=0.01,reorder=0.01 \
  --progress false -o "$out/ab-light-loss.pcap" 2>/dev/null

# 20 symbols, 2,000 messages, clean lines except messages 1000..1019 lost on both lines:
# only a re-request can recover them.
"$bin" generate --seed 11 --symbols 20 --messages 2000 --rate 10000 --gap 1000:20 \
  --progress false -o "$out/gap-both-lines.pcap" 2>/dev/null

# The same kind of session as a Nasdaq BinaryFILE day file, gzipped.
"$bin" generate --seed 3 --symbols 25 --messages 5000 --format binaryfile \
  --progress false -o "$out/01022024.NASDAQ_ITCH50.gz" 2>/dev/null
