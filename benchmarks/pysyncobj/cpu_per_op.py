"""Where a put's CPU goes at 64 clients: the client process vs the 3 servers, per client kind.

    target/test-venv/bin/python benchmarks/pysyncobj/cpu_per_op.py [--seconds 3] [--repeats 2]

Starts 3 `raftkv serve` processes (durable, data dirs in /var/tmp) and, alternately, drives them
with 64 Rust Clerks (`raftkv.bench`), 64 threads of `raftkv.Clerk`, and one `raftkv.aio.Clerk`
with 64 tasks. For each run: puts/s, p50, and the CPU time per put of this process (user + sys,
`os.times`) and of the three servers together (`/proc/PID/stat`), over the whole run (warm-up
included, as are its puts).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import bench  # benchmarks/pysyncobj/bench.py, beside this file

import raftkv
from raftkv import procs

TICKS = os.sysconf("SC_CLK_TCK")


def servers_cpu(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICKS


def own_cpu() -> float:
    t = os.times()
    return t.user + t.system


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--warmup", type=float, default=0.5)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--clients", type=int, default=64)
    args = ap.parse_args()
    n, secs, warm = args.clients, args.seconds, args.warmup
    kinds = {
        "rust": lambda addrs: raftkv.bench(addrs, clients=n, seconds=secs, warmup=warm),
        "threads": lambda addrs: bench.raftkv_threads(addrs, n, warm, secs),
        "aio": lambda addrs: bench.raftkv_aio(addrs, n, warm, secs),
    }
    with tempfile.TemporaryDirectory(prefix="raftkv-cpu-", dir="/var/tmp") as tmp:
        servers, addrs = procs.start_servers(3, tmp, "tokio", 1)
        pids = [s.pid for s in servers]
        try:
            procs.wait_serving(addrs, servers, log_dir=tmp)
            for _ in range(args.repeats):
                for name, run in kinds.items():
                    c0, s0 = own_cpu(), servers_cpu(pids)
                    r = run(addrs)
                    c1, s1 = own_cpu(), servers_cpu(pids)
                    ops = r["ops_per_s"] * (secs + warm)
                    print(
                        f"{name:<8} {n} clients: {r['ops_per_s']:8.0f} puts/s, "
                        f"p50 {r['lat_us']['p50']:6} us, CPU per put: client "
                        f"{1e6 * (c1 - c0) / ops:4.0f} us, servers {1e6 * (s1 - s0) / ops:4.0f} us "
                        f"(load {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
        finally:
            procs.stop_servers(servers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
