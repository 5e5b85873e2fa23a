#!/usr/bin/env python3
"""How long a Prometheus scrape of ``raftkv serve --metrics-addr`` takes while the cluster is
under load (issue 18).

Starts 3 ``raftkv serve`` processes (LMDB in a temp dir, one worker each), drives them with
``raftkv bench --clients 64`` and scrapes every node's ``/metrics`` about every 0.1 s meanwhile;
prints the bench's line and, per node, the median, p99 and max scrape time and the body size.

  python3 benchmarks/metrics_scrape.py [--clients 64] [--seconds 20]   # raftkv on PATH
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import tempfile
import time
import urllib.request

from raftkv.procs import free_ports


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--seconds", type=float, default=20.0)
    args = p.parse_args()
    d = tempfile.mkdtemp(prefix="raftkv-scrape-")
    ports = free_ports(9)
    peers = ",".join(f"{i + 1}=127.0.0.1:{ports[i]}" for i in range(3))
    clients = ",".join(f"{i + 1}=127.0.0.1:{ports[3 + i]}" for i in range(3))
    servers = []
    for i in range(3):
        log = open(f"{d}/n{i + 1}.log", "w")  # noqa: SIM115 (open while the server runs)
        servers.append(
            subprocess.Popen(
                ["raftkv", "serve", "--id", str(i + 1), "--peers", peers,
                 "--client-addrs", clients, "--data-dir", f"{d}/n{i + 1}",
                 "--metrics-addr", f"127.0.0.1:{ports[6 + i]}", "--workers", "1"],
                stderr=log,
            )
        )  # fmt: skip
    try:
        time.sleep(3)
        eps = ",".join(f"127.0.0.1:{ports[3 + i]}" for i in range(3))
        bench = subprocess.Popen(
            ["raftkv", "bench", "--endpoints", eps, "--clients", str(args.clients),
             "--seconds", str(args.seconds), "--warmup", "2"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )  # fmt: skip
        time.sleep(4)  # the warm-up and the first seconds of load
        times: dict[int, list[float]] = {i: [] for i in range(3)}
        sizes: dict[int, int] = {}
        end = time.monotonic() + max(1.0, args.seconds - 6)
        while time.monotonic() < end:
            for i in range(3):
                started = time.monotonic()
                url = f"http://127.0.0.1:{ports[6 + i]}/metrics"
                with urllib.request.urlopen(url, timeout=10) as r:
                    sizes[i] = len(r.read())
                times[i].append((time.monotonic() - started) * 1000)
            time.sleep(0.1)
        out, _ = bench.communicate()
        print("bench:", out.strip())
        for i in range(3):
            xs = sorted(times[i])
            p99 = xs[max(0, int(len(xs) * 0.99) - 1)]
            print(
                f"node {i + 1}: {len(xs)} scrapes, median {statistics.median(xs):.2f} ms, "
                f"p99 {p99:.2f} ms, max {xs[-1]:.2f} ms, body {sizes[i]} bytes"
            )
    finally:
        for s in servers:
            s.terminate()
        for s in servers:
            s.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
