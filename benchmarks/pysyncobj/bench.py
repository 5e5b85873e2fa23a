"""raftkv vs pysyncobj, side by side: puts/s of 3-node clusters on loopback, from Python.

Run by benchmarks/pysyncobj/run.sh (which makes the pysyncobj venv); by hand:

    PYSYNCOBJ_PY=target/pysyncobj-venv/bin/python \
        target/test-venv/bin/python benchmarks/pysyncobj/bench.py [--repeats 3] [--seconds 5]

This interpreter must have raftkv installed; PYSYNCOBJ_PY one with pysyncobj. Cases, each run
`--repeats` times in alternating order, each on a fresh cluster:

- pysyncobj, default settings and `appendEntriesUseBatch=False`: 3 processes, each a SyncObj
  with a ReplDict (in-memory journal: pysyncobj writes nothing to disk by default); the load is
  `--threads` threads of `dict.set(key, value, sync=True)` inside the leader's process (the
  best case: no forwarding).
- raftkv: 3 `raftkv serve` processes (durable: WAL fsync + LMDB), data dirs on disk; the load
  runs in this process: `--threads` threads each with its own `raftkv.Clerk`, and one
  `raftkv.aio.Clerk` with `--threads` and `--tasks` concurrent tasks.

Values are 100 bytes, keys uniform over 10,000. Prints one JSON line per run, then the medians
and the ratios to pysyncobj's fastest setting.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import threading
import time

VALUE = b"v" * 100
KEYSPACE = 10_000

# --- pysyncobj (runs under PYSYNCOBJ_PY, without raftkv) ---------------------------------------


def pysyncobj_node(args: argparse.Namespace) -> int:
    """One pysyncobj node; the one that leads runs the load and prints its JSON line."""
    from pysyncobj import SyncObj, SyncObjConf
    from pysyncobj.batteries import ReplDict

    ports = [int(p) for p in args.ports.split(",")]
    me = f"127.0.0.1:{ports[args.index]}"
    partners = [f"127.0.0.1:{p}" for i, p in enumerate(ports) if i != args.index]
    conf = SyncObjConf() if args.setting == "default" else SyncObjConf(appendEntriesUseBatch=False)
    d = ReplDict()
    obj = SyncObj(me, partners, consumers=[d], conf=conf)
    deadline = time.monotonic() + 30
    while obj._getLeader() is None:
        if time.monotonic() > deadline:
            print(json.dumps({"error": "no leader in 30 s"}), flush=True)
            return 1
        time.sleep(0.05)
    if not obj._isLeader():
        # Not the leader: serve until the driver stops this process.
        while True:
            time.sleep(1)
    # A first write, to know the cluster commits.
    d.set("ready", "1", sync=True, timeout=10)

    def put(rng: random.Random) -> None:
        d.set(f"k{rng.randrange(KEYSPACE):06d}", VALUE, sync=True, timeout=10)

    result = closed_loop_threads(args.threads, args.warmup, args.seconds, lambda: put)
    print(json.dumps(result), flush=True)
    return 0


# --- the load, shared -------------------------------------------------------------------------


def closed_loop_threads(threads, warmup, seconds, make_op):
    """`threads` threads calling `op(rng)` in a loop; counts what finishes in the window."""
    start = time.monotonic()
    t0, t1 = start + warmup, start + warmup + seconds
    counts = [0] * threads
    errors = [0] * threads
    lats: list[list[float]] = [[] for _ in range(threads)]

    def worker(i):
        op = make_op()
        rng = random.Random(i)
        while True:
            a = time.monotonic()
            if a >= t1:
                return
            try:
                op(rng)
            except Exception:
                errors[i] += 1
                continue
            b = time.monotonic()
            if a >= t0 and b <= t1:
                counts[i] += 1
                lats[i].append(b - a)

    ts = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return summary(sum(counts), sum(errors), seconds, [x for lane in lats for x in lane])


def summary(ops, errors, seconds, lats):
    lats.sort()

    def q(p):
        # the ceil(n*p)-th smallest, as benchmarks/run.sh's percentiles
        if not lats:
            return None
        return round(lats[min(len(lats) - 1, max(0, math.ceil(len(lats) * p) - 1))] * 1e6)

    return {
        "ops": ops,
        "errors": errors,
        "ops_per_s": round(ops / seconds, 1),
        "lat_us": {"p50": q(0.5), "p99": q(0.99)},
    }


# --- raftkv -------------------------------------------------------------------------------------


def raftkv_threads(addrs, threads, warmup, seconds):
    import raftkv

    clerks = [raftkv.Clerk(addrs) for _ in range(threads)]
    it = iter(clerks)
    lock = threading.Lock()

    def make_op():
        with lock:
            clerk = next(it)
        return lambda rng: clerk.put(f"k{rng.randrange(KEYSPACE):06d}", VALUE)

    return closed_loop_threads(threads, warmup, seconds, make_op)


def raftkv_aio(addrs, tasks, warmup, seconds):
    import raftkv.aio

    async def main():
        async with raftkv.aio.Clerk(addrs) as clerk:
            loop = asyncio.get_running_loop()
            start = loop.time()
            t0, t1 = start + warmup, start + warmup + seconds
            counts = [0] * tasks
            errors = [0] * tasks
            lats: list[list[float]] = [[] for _ in range(tasks)]

            async def worker(i):
                rng = random.Random(i)
                while True:
                    a = loop.time()
                    if a >= t1:
                        return
                    try:
                        await clerk.put(f"k{rng.randrange(KEYSPACE):06d}", VALUE)
                    except Exception:
                        errors[i] += 1
                        continue
                    b = loop.time()
                    if a >= t0 and b <= t1:
                        counts[i] += 1
                        lats[i].append(b - a)

            await asyncio.gather(*(worker(i) for i in range(tasks)))
            return summary(sum(counts), sum(errors), seconds, [x for ln in lats for x in ln])

    return asyncio.run(main())


def run_raftkv(case, args):
    from raftkv import procs

    with tempfile.TemporaryDirectory(prefix="raftkv-vs-pysyncobj-", dir=args.tmp) as tmp:
        servers, addrs = procs.start_servers(3, tmp, "tokio", 1)
        try:
            procs.wait_serving(addrs, servers, timeout=30.0, log_dir=tmp)
            if case == "raftkv-threads":
                return raftkv_threads(addrs, args.threads, args.warmup, args.seconds)
            n = args.threads if case == "raftkv-aio" else args.tasks
            return raftkv_aio(addrs, n, args.warmup, args.seconds)
        finally:
            procs.stop_servers(servers)


def run_pysyncobj(setting, args):
    py = os.environ.get("PYSYNCOBJ_PY")
    if not py:
        raise SystemExit(
            "set PYSYNCOBJ_PY to a Python with pysyncobj (benchmarks/pysyncobj/run.sh)"
        )
    from raftkv.procs import free_ports

    ports = ",".join(map(str, free_ports(3)))
    common = [
        py, __file__, "_node", "--ports", ports, "--setting", setting,
        "--threads", str(args.threads), "--warmup", str(args.warmup),
        "--seconds", str(args.seconds),
    ]  # fmt: skip
    procs = [
        subprocess.Popen(
            common + ["--index", str(i)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )
        for i in range(3)
    ]
    try:
        deadline = time.monotonic() + 60 + args.warmup + args.seconds
        while time.monotonic() < deadline:
            for p in procs:
                if p.poll() is not None:
                    out = p.stdout.read().decode().strip() if p.stdout else ""
                    if out:
                        result = json.loads(out.splitlines()[-1])
                        if "error" in result:
                            raise RuntimeError(f"pysyncobj: {result['error']}")
                        return result
            time.sleep(0.1)
        raise RuntimeError("pysyncobj: no result in time")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()


CASES = [
    "pysyncobj-default",
    "pysyncobj-nobatch",
    "raftkv-threads",
    "raftkv-aio",
    "raftkv-aio-tasks",
]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--tasks", type=int, default=1024)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--tmp", default="/var/tmp", help="where raftkv's data dirs go (not tmpfs)")
    ap.add_argument("--out", help="also append the JSON lines to this file")
    args = ap.parse_args()
    cases = args.cases.split(",")
    labels = {
        "pysyncobj-default": f"pysyncobj, default, {args.threads} threads",
        "pysyncobj-nobatch": f"pysyncobj, appendEntriesUseBatch=False, {args.threads} threads",
        "raftkv-threads": f"raftkv, {args.threads} threads x Clerk",
        "raftkv-aio": f"raftkv, aio Clerk, {args.threads} tasks",
        "raftkv-aio-tasks": f"raftkv, aio Clerk, {args.tasks} tasks",
    }
    print(f"# cpus {os.cpu_count()}, load average at start {load_average()}", flush=True)
    results: dict[str, list[dict]] = {c: [] for c in cases}
    out = open(args.out, "a") if args.out else None  # noqa: SIM115
    for r in range(args.repeats):
        order = cases if r % 2 == 0 else cases[::-1]
        for case in order:
            load = load_average()
            if case.startswith("pysyncobj-"):
                res = run_pysyncobj(case.removeprefix("pysyncobj-"), args)
            else:
                res = run_raftkv(case, args)
            line = {"case": case, "repeat": r, "load_before": load, **res}
            results[case].append(res)
            print(json.dumps(line), flush=True)
            if out:
                out.write(json.dumps(line) + "\n")
    window = f"{args.seconds} s measured + {args.warmup} s warm-up"
    print(f"\n# medians of {args.repeats} runs ({window})")
    print(f"# load average at end {load_average()}")
    med = {c: statistics.median(x["ops_per_s"] for x in results[c]) for c in cases}
    base = med.get("pysyncobj-nobatch")
    print(f"{'case':<55} {'puts/s':>9} {'p50 us':>8} {'p99 us':>8} {'x nobatch':>10}")
    for c in cases:
        p50 = statistics.median(x["lat_us"]["p50"] or 0 for x in results[c])
        p99 = statistics.median(x["lat_us"]["p99"] or 0 for x in results[c])
        ratio = f"{med[c] / base:.1f}" if base else "-"
        print(f"{labels[c]:<55} {med[c]:>9.0f} {p50:>8.0f} {p99:>8.0f} {ratio:>10}")
    if "pysyncobj-default" in med and "raftkv-threads" in med and med["pysyncobj-default"]:
        ratio = med["raftkv-threads"] / med["pysyncobj-default"]
        print(f"# raftkv threads / pysyncobj default: {ratio:.1f}x")
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "_node":
        ap = argparse.ArgumentParser()
        ap.add_argument("_node")
        ap.add_argument("--ports", required=True)
        ap.add_argument("--index", type=int, required=True)
        ap.add_argument("--setting", choices=("default", "nobatch"), required=True)
        ap.add_argument("--threads", type=int, required=True)
        ap.add_argument("--warmup", type=float, required=True)
        ap.add_argument("--seconds", type=float, required=True)
        sys.exit(pysyncobj_node(ap.parse_args()))
    sys.exit(main())
