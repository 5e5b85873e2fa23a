#!/usr/bin/env bash
# raftkv vs etcd with large values: put throughput (MB/s) and latency at 4 KiB, 64 KiB and 1 MiB.
#
#   benchmarks/large_values.sh     REPEATS=2 x (4 KiB and 64 KiB: 1, 8, 64 clients;
#                                  1 MiB: 1, 8 clients), 5 s measured + 1 s warm-up (~8 min)
#
# Each value size is one benchmarks/run.sh run (same method: 3 durable nodes each, fresh
# clusters, both systems alternating per case, noise recorded), put only. The keyspace is
# 64 MiB / value size (at most 10,000 keys), so each system holds at most 64 MiB of live data
# whatever the value size: 4 KiB -> 10,000 keys, 64 KiB -> 1,024, 1 MiB -> 64. 1 MiB stops at
# 8 clients: 64 clients would keep 64 MiB in flight, which is raftkv's uncommitted_bytes_max
# (a leader refuses proposals beyond it) and etcd's --max-request-bytes is 1.5 MiB a request.
#
# Output: benchmarks/results/large-STAMP.{jsonl,md,svg} (summarize_large.py): per value size and
# client count, MB/s, p50 and p99 of both systems and the ratios; the graph draws MB/s and p99
# against value size.
#
# Knobs (environment): SIZES ["4096 65536 1048576"], CLIENTS ["1 8 64"] for sizes below 1 MiB,
# CLIENTS_1M ["1 8"] for 1 MiB and above, REPEATS [2], SECS [5], WARMUP [1], and every other
# knob of run.sh (RAFTKV, SYSTEMS, TMP_BASE, QUIET_WAIT, ...), which is passed on.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SIZES="${SIZES:-4096 65536 1048576}"
CLIENTS="${CLIENTS:-1 8 64}"
CLIENTS_1M="${CLIENTS_1M:-1 8}"
export REPEATS="${REPEATS:-2}" SECS="${SECS:-5}" WARMUP="${WARMUP:-1}"
RESULTS_DIR="${RESULTS_DIR:-$HERE/results}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$RESULTS_DIR/large-$STAMP.jsonl"
PARTS="$(mktemp -d "${TMPDIR:-/tmp}/raftkv-large.XXXXXX")"
trap 'rm -rf "$PARTS"' EXIT
mkdir -p "$RESULTS_DIR"
: >"$OUT"

FAILED=0
for size in $SIZES; do
  [[ "$size" =~ ^[0-9]+$ && "$size" -gt 0 ]] || { echo "[large] SIZES must be positive integers (got '$size')" >&2; exit 1; }
  clients="$CLIENTS"
  ((size >= 1 << 20)) && clients="$CLIENTS_1M"
  keyspace=$(((64 << 20) / size))
  ((keyspace > 10000)) && keyspace=10000
  ((keyspace < 1)) && keyspace=1
  echo "[large $(date +%H:%M:%S)] value size $size B: put with $clients clients, keyspace $keyspace" >&2
  VALUE_SIZE="$size" KEYSPACE="$keyspace" PUT_CLIENTS="$clients" MIXED_CLIENTS="" GET_CLIENTS="" PLOT=0 \
    RESULTS_DIR="$PARTS/$size" "$HERE/run.sh" || FAILED=$((FAILED + 1))
  # One file for all sizes: the first machine line, and every run line with its value size
  # and keyspace (from its part's machine line).
  for part in "$PARTS/$size"/*.jsonl; do
    python3 - "$part" "$OUT" <<'EOF'
import json, sys
part, out = sys.argv[1], sys.argv[2]
lines = [json.loads(l) for l in open(part) if l.strip()]
machine = next((l for l in lines if l.get("kind") == "machine"), {})
have_machine = any(l.strip() for l in open(out))
with open(out, "a") as f:
    for rec in lines:
        if rec.get("kind") == "machine":
            if have_machine:
                continue
        else:
            rec.setdefault("value_size", machine.get("value_size"))
            rec["keyspace"] = machine.get("keyspace")
        f.write(json.dumps(rec) + "\n")
EOF
  done
done
python3 "$HERE/summarize_large.py" "$OUT"
echo "[large] wrote ${OUT%.jsonl}.{jsonl,md,svg}" >&2
((FAILED == 0)) || { echo "[large] $FAILED value size(s) had failed runs; see $OUT" >&2; exit 1; }
