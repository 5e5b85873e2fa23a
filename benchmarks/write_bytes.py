"""Bytes each node writes to disk per byte of value put, raftkv vs etcd (issue 20's large values).

    python benchmarks/write_bytes.py [--value-size 65536] [--keyspace 1024] [--clients 8]
                                     [--seconds 5] [--systems raftkv,etcd]

A fresh 3-node cluster of each system (as benchmarks/memory.py starts them), then `--seconds` of
put load (`raftkv.bench` / `etcd-load --mode put`, the keyspace and value size of
large_values.sh), and per node the growth of `write_bytes` in /proc/PID/io (bytes the process
caused to be written to the block device) divided by the bytes of values put. Unlike ops/s on a
shared machine, this ratio does not depend on how much CPU the run got.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memory


def write_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/io") as f:
        for line in f:
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
    raise RuntimeError(f"no write_bytes for {pid}")


def writes_so_far(c) -> int:
    """Entries committed so far (raftkv: the highest commit index; etcd: the store's revision):
    the puts of the load are the difference, plus a few entries of the systems' own."""
    if isinstance(c, memory.Raftkv):
        import raftkv

        clerk = raftkv.Clerk(c.endpoints, timeout=2.0)
        return max(clerk.server_status(a)["commit_index"] for a in c.endpoints)
    deadline = time.monotonic() + 60
    while True:
        try:
            return max(int(c._range(e)["header"]["revision"]) for e in c.endpoints)
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def load(c, args) -> float:
    """Runs the put load; returns the ops/s it reported."""
    if isinstance(c, memory.Raftkv):
        import raftkv

        r = raftkv.bench(
            c.endpoints,
            clients=args.clients,
            seconds=args.seconds,
            mode="put",
            warmup=0.0,
            keyspace=args.keyspace,
            value_size=args.value_size,
        )
    else:
        out = subprocess.run(
            [
                memory.ETCD_LOAD,
                "--endpoints",
                ",".join(c.endpoints),
                "--clients",
                str(args.clients),
                "--seconds",
                str(args.seconds),
                "--warmup",
                "0",
                "--mode",
                "put",
                "--keyspace",
                str(args.keyspace),
                "--value-size",
                str(args.value_size),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        r = json.loads(out.stdout.strip().splitlines()[-1])
    return r["ops_per_s"]


def one(system: str, args) -> dict:
    tmp = memory.on_disk_tmp(args.dir)
    c = memory.Raftkv(tmp.name, []) if system == "raftkv" else memory.Etcd(tmp.name, [])
    try:
        c.wait_serving(60.0)
        before = [write_bytes(p.pid) for p in c.procs]
        n0 = writes_so_far(c)
        t = time.monotonic()
        ops_per_s = load(c, args)
        time.sleep(3.0)  # background writes (checkpoints, bbolt commits) reach the disk
        wall = time.monotonic() - t
        after = [write_bytes(p.pid) for p in c.procs]
        puts = writes_so_far(c) - n0
        put_bytes = puts * args.value_size
        per_node = [(a - b) / put_bytes for a, b in zip(after, before)]
        rec = {
            "system": system,
            "value_size": args.value_size,
            "keyspace": args.keyspace,
            "clients": args.clients,
            "ops_per_s": ops_per_s,
            "puts": puts,
            "wall_s": wall,
            "written_per_value_byte": per_node,
        }
        print(
            f"{system}: {ops_per_s:,.0f} puts/s of {args.value_size} B; each node wrote "
            f"{', '.join(f'{x:.2f}' for x in per_node)} bytes per byte of value",
            flush=True,
        )
        return rec
    finally:
        memory.kill_all(c.procs)
        tmp.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--value-size", type=int, default=65536)
    ap.add_argument("--keyspace", type=int, default=1024)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--systems", default="raftkv,etcd")
    ap.add_argument("--dir", default=None)
    args = ap.parse_args()
    for s in args.systems.split(","):
        print(json.dumps(one(s, args)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
