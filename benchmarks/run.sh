#!/usr/bin/env bash
# raftkv vs etcd: the whole benchmark matrix, both systems in the same run.
#
#   benchmarks/run.sh              full matrix: REPEATS=3 x (put 1, 8, 64, 256; mixed 64;
#                                  get 64; raftkv's read variants at 64), 10 s measured +
#                                  1 s warm-up per run (~14 min + builds)
#   QUICK=1 benchmarks/run.sh      quick mode for before/after a hot-path change:
#                                  1 repeat, 3 s measured + 0.5 s warm-up (~1.5 min)
#
# Workload: 3 members/nodes on loopback, 100-byte values, closed-loop clients sending
# to the leader; mixed = 50% linearizable get / 50% put; get = gets only.
# Read variants (issue 20), raftkv only, compared with etcd's plain case of the same mode:
#   MODE_lease     `raftkv serve --lease-reads`: the leader serves gets under a lease
#   MODE_follower  `--follower-reads`, clients send each get to a node at random
#                  (`raftkv bench --read-from any`): followers serve gets with a read index
#   MODE_both      both
#   etcd:   Debian's etcd with default flags (every put fsynced), a fresh cluster with
#           new data dirs per run; load from benchmarks/etcd-load (keyspace 10,000).
#   raftkv: `raftkv bench --nodes 3` (3 `raftkv serve` processes, durable LMDB), whose
#           data dirs go to the same temp dir on disk (TMPDIR).
# For each case the two systems run back to back, in alternating order.
#
# Output (STAMP = UTC start time):
#   benchmarks/results/STAMP.jsonl  a "machine" line, then one line per run: the load
#                                   generator's JSON + system, case, repeat, ok, noise
#   benchmarks/results/STAMP.md     medians, ratios and noise (also printed)
#   benchmarks/results/STAMP.png    throughput and p99 vs clients (needs matplotlib)
#
# Knobs (environment, defaults in brackets):
#   RAFTKV [raftkv on PATH]      the raftkv CLI to measure
#   RAFTKV_STATE [memory]        where its servers keep the KV state (`raftkv serve --state`:
#                                memory or lmdb)
#   REPEATS [3; QUICK: 1]  SECS [10; QUICK: 3]  WARMUP [1; QUICK: 0.5]
#   PUT_CLIENTS ["1 8 64 256"]  MIXED_CLIENTS ["64"]  VALUE_SIZE [100]  KEYSPACE [10000]
#   GET_CLIENTS ["64"]           get-only cases (both systems)
#   READ_VARIANTS ["lease follower both"]  raftkv read variants of each mixed and get case
#   SYSTEMS ["raftkv etcd"]      drop one to measure only the other
#   TMP_BASE [first of /var/tmp, /tmp, benchmarks/ that is not tmpfs]  where data dirs go
#   KEEP_TMP [0]                 1 = keep the temp dir (server logs) afterwards
#   QUIET_PCT [20]  QUIET_WAIT [60; QUICK: 0]  before each run, wait up to QUIET_WAIT s
#                                until other processes use < QUIET_PCT % of the machine
#   RESULTS_DIR [benchmarks/results]   PLOT [1]: 0 = no PNG, no matplotlib install
#   ETCD_EXTRA_FLAGS [""]        appended to every etcd command line
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
QUICK="${QUICK:-0}"
if [[ "$QUICK" == 1 ]]; then
  REPEATS="${REPEATS:-1}"; SECS="${SECS:-3}"; WARMUP="${WARMUP:-0.5}"; QUIET_WAIT="${QUIET_WAIT:-0}"
else
  REPEATS="${REPEATS:-3}"; SECS="${SECS:-10}"; WARMUP="${WARMUP:-1}"; QUIET_WAIT="${QUIET_WAIT:-60}"
fi
PUT_CLIENTS="${PUT_CLIENTS-1 8 64 256}"
MIXED_CLIENTS="${MIXED_CLIENTS-64}"
GET_CLIENTS="${GET_CLIENTS-64}"
READ_VARIANTS="${READ_VARIANTS-lease follower both}"
VALUE_SIZE="${VALUE_SIZE:-100}"
KEYSPACE="${KEYSPACE:-10000}"
SYSTEMS="${SYSTEMS:-raftkv etcd}"
QUIET_PCT="${QUIET_PCT:-20}"
KEEP_TMP="${KEEP_TMP:-0}"
RESULTS_DIR="${RESULTS_DIR:-$HERE/results}"
PLOT="${PLOT:-1}"
ETCD_EXTRA_FLAGS="${ETCD_EXTRA_FLAGS:-}"

log() { echo "[bench $(date +%H:%M:%S)] $*" >&2; }
die() { echo "[bench] ERROR: $*" >&2; exit 1; }

# ------------------------------------------------------------------ prerequisites
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$1: $2"); }
need python3 "apt-get install python3 python3-venv"
need timeout "apt-get install coreutils"
need df "apt-get install coreutils"
if [[ " $SYSTEMS " == *" etcd "* ]]; then
  need etcd "apt-get install etcd-server"
  need etcdctl "apt-get install etcd-client"
  need cargo "install a Rust toolchain (rustup) to build benchmarks/etcd-load"
  [[ -n "${PROTOC:-}" ]] || need protoc "apt-get install protobuf-compiler (the etcd-client crate compiles etcd's .proto files)"
fi
if [[ " $SYSTEMS " == *" raftkv "* ]]; then
  RAFTKV="${RAFTKV:-$(command -v raftkv || true)}"
  if [[ -z "$RAFTKV" || ! -x "$RAFTKV" ]]; then
    missing+=("raftkv: set RAFTKV=/path/to/raftkv or put it on PATH (python3 -m venv V && V/bin/pip install <raftkv checkout>)")
  fi
fi
if ((${#missing[@]})); then
  echo "[bench] missing prerequisites:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  exit 1
fi
RAFTKV="${RAFTKV:-}"
RAFTKV_STATE="${RAFTKV_STATE:-memory}"
[[ "$RAFTKV_STATE" == memory || "$RAFTKV_STATE" == lmdb ]] || { echo "RAFTKV_STATE must be memory or lmdb (got '$RAFTKV_STATE')" >&2; exit 1; }
for v in $READ_VARIANTS; do
  [[ "$v" =~ ^(lease|follower|both)$ ]] || die "READ_VARIANTS: unknown variant $v (lease, follower, both)"
done
for n in $PUT_CLIENTS $MIXED_CLIENTS $GET_CLIENTS "$REPEATS" "$VALUE_SIZE" "$KEYSPACE"; do
  [[ "$n" =~ ^[0-9]+$ && "$n" -gt 0 ]] || die "client counts, REPEATS, VALUE_SIZE and KEYSPACE must be positive integers (got '$n')"
done
# A packaged /etc/default/etcd-style environment must not change etcd's flags.
while read -r v; do unset "$v"; done < <(compgen -e | grep '^ETCD_' || true)

# ------------------------------------------------------------------ build etcd-load
ETCD_LOAD="$HERE/etcd-load/target/release/etcd-load"
if [[ " $SYSTEMS " == *" etcd "* ]]; then
  log "building benchmarks/etcd-load (first build takes a minute or two)"
  (cd "$HERE/etcd-load" && CARGO_TARGET_DIR="$HERE/etcd-load/target" timeout 1200 cargo build --release --locked --quiet) ||
    die "building etcd-load failed (see above)"
fi

# ------------------------------------------------------------------ temp dir on disk
is_tmpfs() { [[ "$(stat -f -c %T "$1" 2>/dev/null)" == tmpfs ]]; }
if [[ -n "${TMP_BASE:-}" ]]; then
  [[ -d "$TMP_BASE" ]] || die "TMP_BASE=$TMP_BASE is not a directory"
  is_tmpfs "$TMP_BASE" && die "TMP_BASE=$TMP_BASE is tmpfs: data dirs must be on a disk (fsync must cost what it costs)"
else
  for d in /var/tmp /tmp "$HERE"; do
    if [[ -d "$d" && -w "$d" ]] && ! is_tmpfs "$d"; then TMP_BASE="$d"; break; fi
  done
  [[ -n "${TMP_BASE:-}" ]] || die "no writable non-tmpfs directory for data dirs: set TMP_BASE"
fi
TMP="$(mktemp -d "$TMP_BASE/raftkv-etcd-bench.XXXXXX")"

ETCD_PIDS=()
# The data is thrown away, so members get 1 s after SIGTERM and then SIGKILL: a graceful
# stop of all three at once waits ~7 s for a leadership transfer that cannot happen.
stop_etcd() {
  local p
  for p in "${ETCD_PIDS[@]:-}"; do [[ -n "$p" ]] && kill -TERM "$p" 2>/dev/null || true; done
  for p in "${ETCD_PIDS[@]:-}"; do
    [[ -n "$p" ]] || continue
    for _ in $(seq 1 10); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null || true
    wait "$p" 2>/dev/null || true
  done
  ETCD_PIDS=()
}
# `raftkv bench` stops its own servers; should one survive (bench killed hard), find it
# by its data dir, which is inside our temp dir, and kill that PID.
stop_stray_raftkv() { timeout 60 python3 "$HERE/measure.py" strays --under "$TMP" --kill || true; }
cleanup() {
  stop_etcd
  stop_stray_raftkv
  if [[ "$KEEP_TMP" == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$RESULTS_DIR"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
OUT="$RESULTS_DIR/$STAMP.jsonl"
: >"$OUT"
M="python3 $HERE/measure.py"

GIT_REV="$(git -C "$HERE/.." rev-parse --short HEAD 2>/dev/null || echo unknown)"
git -C "$HERE/.." diff --quiet HEAD -- 2>/dev/null || GIT_REV="$GIT_REV+dirty"
EXTRA="$(python3 -c 'import json,sys; a=sys.argv; print(json.dumps({"quick": a[1]=="1", "repeats": int(a[2]), "seconds": float(a[3]), "warmup": float(a[4]), "value_size": int(a[5]), "keyspace": int(a[6]), "put_clients": [int(x) for x in a[7].split()], "mixed_clients": [int(x) for x in a[8].split()], "systems": a[9].split(), "checkout": a[10], "etcd_extra_flags": a[11], "raftkv_state": a[12]}))' \
  "$QUICK" "$REPEATS" "$SECS" "$WARMUP" "$VALUE_SIZE" "$KEYSPACE" "$PUT_CLIENTS" "$MIXED_CLIENTS" "$SYSTEMS" "$GIT_REV" "$ETCD_EXTRA_FLAGS" "$RAFTKV_STATE")"
timeout 60 $M machine --tmp "$TMP" --raftkv "${RAFTKV:-none}" --extra "$EXTRA" | tee -a "$OUT" >&2

# bound on one measured run: start-up + prefill + warm-up + window + shutdown
RUN_TIMEOUT="$(python3 -c "print(int(${SECS} + ${WARMUP} + 120))")"

# ------------------------------------------------------------------ etcd cluster
free_ports() { python3 -c '
import socket, sys
ss = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))' "$1"; }
RUN_NO=0
start_etcd() {  # sets ETCD_PIDS, ETCD_EPS, ETCD_DIR
  local ports cluster="" i name cp pp
  ETCD_DIR="$TMP/etcd-$RUN_NO"
  mkdir -p "$ETCD_DIR"
  read -r -a ports <<<"$(free_ports 6)"
  for i in 0 1 2; do cluster+="${cluster:+,}m$((i + 1))=http://127.0.0.1:${ports[$((3 + i))]}"; done
  ETCD_EPS=""
  for i in 0 1 2; do
    name="m$((i + 1))"; cp="${ports[$i]}"; pp="${ports[$((3 + i))]}"
    # shellcheck disable=SC2086
    etcd --name "$name" --data-dir "$ETCD_DIR/$name" \
      --listen-client-urls "http://127.0.0.1:$cp" --advertise-client-urls "http://127.0.0.1:$cp" \
      --listen-peer-urls "http://127.0.0.1:$pp" --initial-advertise-peer-urls "http://127.0.0.1:$pp" \
      --initial-cluster "$cluster" --initial-cluster-token "raftkv-bench-$$-$RUN_NO" \
      --initial-cluster-state new $ETCD_EXTRA_FLAGS >"$ETCD_DIR/$name.log" 2>&1 &
    ETCD_PIDS+=("$!")
    ETCD_EPS+="${ETCD_EPS:+,}http://127.0.0.1:$cp"
  done
  local deadline=$((SECONDS + 30))
  until timeout 10 etcdctl --endpoints="$ETCD_EPS" --dial-timeout=2s --command-timeout=3s endpoint health >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      tail -n 15 "$ETCD_DIR"/*.log >&2 || true
      return 1
    fi
    sleep 0.3
  done
}

# ------------------------------------------------------------------ one run
# `timeout --foreground` keeps measure.py in our process group so that Ctrl-C reaches it
# (it then stops the load generator cleanly); measure.py bounds the command itself.
FAILED=0
run_one() {  # $1 system  $2 mode  $3 clients  $4 repeat
  local sys="$1" mode="$2" clients="$3" rep="$4" case="$2-$3" noise
  RUN_NO=$((RUN_NO + 1))
  noise="$(timeout $((QUIET_WAIT + 30)) $M quiet --max-pct "$QUIET_PCT" --wait "$QUIET_WAIT")" || noise='{}'
  log "repeat $rep, $case: $sys"
  local args=(--out "$OUT" --system "$sys" --case "$case" --repeat "$rep" --noise "$noise"
    --timeout "$RUN_TIMEOUT" --log "$TMP/$sys-$RUN_NO.stderr")
  local rc=0
  if [[ "$sys" == raftkv ]]; then
    # A read variant: MODE_VARIANT (see the top).
    local reads=()
    case "$mode" in
      *_lease) reads=(--lease-reads) ;;
      *_follower) reads=(--follower-reads --read-from any) ;;
      *_both) reads=(--lease-reads --follower-reads --read-from any) ;;
    esac
    mkdir -p "$TMP/raftkv-$RUN_NO"
    TMPDIR="$TMP/raftkv-$RUN_NO" timeout --foreground -k 10 $((RUN_TIMEOUT + 40)) $M run "${args[@]}" -- \
      "$RAFTKV" bench --nodes 3 --clients "$clients" --seconds "$SECS" --warmup "$WARMUP" \
      --mode "${mode%%_*}" "${reads[@]}" --value-size "$VALUE_SIZE" --keyspace "$KEYSPACE" \
      --state "$RAFTKV_STATE" >/dev/null || rc=$?
    stop_stray_raftkv
    rm -rf "$TMP/raftkv-$RUN_NO"
  else
    if ! start_etcd; then
      log "etcd cluster did not become healthy in 30 s"
      python3 -c 'import json,sys; print(json.dumps({"system":"etcd","case":sys.argv[1],"repeat":int(sys.argv[2]),"ok":False,"error":"cluster did not become healthy"}))' \
        "$case" "$rep" >>"$OUT"
      stop_etcd; FAILED=$((FAILED + 1)); return 0
    fi
    timeout --foreground -k 10 $((RUN_TIMEOUT + 40)) $M run "${args[@]}" --pids "$(IFS=,; echo "${ETCD_PIDS[*]}")" -- \
      "$ETCD_LOAD" --endpoints "$ETCD_EPS" --clients "$clients" --seconds "$SECS" --warmup "$WARMUP" \
      --mode "$mode" --value-size "$VALUE_SIZE" --keyspace "$KEYSPACE" >/dev/null || rc=$?
    stop_etcd
    [[ "$KEEP_TMP" == 1 ]] || rm -rf "$ETCD_DIR"
  fi
  ((rc == 130)) && exit 130
  if ((rc != 0)); then
    FAILED=$((FAILED + 1))
    log "$sys $case FAILED (rc=$rc); its stderr:"
    tail -n 20 "$TMP/$sys-$RUN_NO.stderr" >&2 || true
  fi
}

# ------------------------------------------------------------------ the matrix
CASES=()
for c in $PUT_CLIENTS; do CASES+=("put $c"); done
for c in $MIXED_CLIENTS; do CASES+=("mixed $c"); done
for c in $GET_CLIENTS; do CASES+=("get $c"); done
for v in $READ_VARIANTS; do
  for c in $MIXED_CLIENTS; do CASES+=("mixed_$v $c"); done
  for c in $GET_CLIENTS; do CASES+=("get_$v $c"); done
done
read -r -a SYS <<<"$SYSTEMS"
log "temp dir $TMP ($(df -PT "$TMP" | awk 'NR==2{print $1" "$2}')); ${#CASES[@]} cases x $REPEATS repeats x ${#SYS[@]} systems, ${SECS}s + ${WARMUP}s warm-up each"
log "results -> $OUT"
for ((rep = 1; rep <= REPEATS; rep++)); do
  idx=0
  for cs in "${CASES[@]}"; do
    read -r mode clients <<<"$cs"
    # alternate which system goes first, per case and per repeat
    if (((rep + idx) % 2 == 1)) && ((${#SYS[@]} == 2)); then order=("${SYS[1]}" "${SYS[0]}"); else order=("${SYS[@]}"); fi
    # read variants are raftkv's alone
    if [[ "$mode" == *_* ]]; then
      [[ " $SYSTEMS " == *" raftkv "* ]] || continue
      order=(raftkv)
    fi
    for s in "${order[@]}"; do run_one "$s" "$mode" "$clients" "$rep"; done
    idx=$((idx + 1))
  done
done

# ------------------------------------------------------------------ summary
PY=python3
if [[ "$PLOT" == 1 ]] && ! python3 -c 'import matplotlib' 2>/dev/null; then
  VENV="$HERE/.venv"
  if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -c 'import matplotlib' 2>/dev/null; then
    PY="$VENV/bin/python"
  else
    log "matplotlib not found; installing it into benchmarks/.venv for the plot"
    if { [[ -x "$VENV/bin/python" ]] || timeout 120 python3 -m venv "$VENV" >&2; } &&
      timeout 600 "$VENV/bin/pip" install --quiet --disable-pip-version-check matplotlib >&2; then
      PY="$VENV/bin/python"
    else
      log "could not install matplotlib (python3-venv missing? no registry?); no PNG this time"
    fi
  fi
fi
plot_flag=()
[[ "$PLOT" == 1 ]] || plot_flag=(--no-plot)
timeout 120 "$PY" "$HERE/summarize.py" "$OUT" "${plot_flag[@]}"
((FAILED == 0)) || { log "$FAILED run(s) failed; see their lines in $OUT"; exit 1; }
