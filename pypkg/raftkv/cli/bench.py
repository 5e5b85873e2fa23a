"""``raftkv bench``: closed-loop load on a cluster (its own ``raftkv serve`` processes unless
``--endpoints`` names a running one); prints one JSON line."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING

import raftkv
from raftkv import procs
from raftkv.cli._common import endpoints, workers

if TYPE_CHECKING:
    from raftkv.cli._common import Subparsers


def add_parser(sub: Subparsers) -> None:
    """Adds ``bench`` and its options to the command line."""
    b = sub.add_parser(
        "bench",
        help="closed-loop load; one JSON line on stdout",
        description="Start --nodes `raftkv serve` processes (temp data dirs, free ports) "
        "unless --endpoints is given, drive --clients closed-loop Clerks (in Rust) and print "
        "one JSON line.",
    )
    b.add_argument("--nodes", type=int, default=3)
    b.add_argument("--clients", type=int, default=64)
    b.add_argument("--seconds", type=float, default=10.0)
    b.add_argument("--mode", choices=("put", "get", "mixed"), default="put")
    b.add_argument("--value-size", type=int, default=100)
    b.add_argument("--warmup", type=float, default=1.0, metavar="S")
    b.add_argument(
        "--keyspace",
        type=int,
        default=10_000,
        help="keys k000000.. chosen uniformly (get and mixed write them all first)",
    )
    b.add_argument("--endpoints", help="benchmark this running cluster instead")
    b.add_argument(
        "--runtime", choices=("tokio", "smol"), default="tokio", help="the servers' runtime"
    )
    b.add_argument(
        "--server-workers",
        type=workers,
        default=1,
        metavar="N",
        help="`raftkv serve --workers` for the servers it starts (default 1: the nodes share "
        "this machine, and one worker each switches less)",
    )
    b.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark and prints its JSON line; stops the servers it started."""
    servers: list[subprocess.Popen[bytes]] = []
    tmp = None
    try:
        if args.endpoints:
            eps = endpoints(args.endpoints)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="raftkv-bench-")
            print(
                f"bench: starting {args.nodes} `raftkv serve` processes (logs in {tmp.name})",
                file=sys.stderr,
                flush=True,
            )
            servers, eps = procs.start_servers(
                args.nodes, tmp.name, args.runtime, args.server_workers
            )
        procs.wait_serving(
            eps, servers, timeout=30.0, log_dir=tmp.name if tmp else None, key="bench-ready"
        )
        print(
            f"bench: {args.clients} clients, mode {args.mode}, value {args.value_size} B, "
            f"warm-up {args.warmup} s, {args.seconds} s measured",
            file=sys.stderr,
            flush=True,
        )
        tty = sys.stderr.isatty()

        def progress(elapsed: float, ops: int, errors: int) -> None:
            rate = ops / elapsed if elapsed > 0 else 0.0
            width = 30
            done = min(width, int(width * elapsed / args.seconds)) if args.seconds else width
            line = (
                f"[{'#' * done}{'.' * (width - done)}] {elapsed:5.1f}/{args.seconds:.0f} s "
                f"{ops} ops {rate:,.0f} ops/s {errors} errors"
            )
            sys.stderr.write(("\r\x1b[K" + line) if tty else (line + "\n"))
            sys.stderr.flush()

        r = raftkv.bench(
            eps,
            clients=args.clients,
            seconds=args.seconds,
            mode=args.mode,
            value_size=args.value_size,
            warmup=args.warmup,
            progress=progress,
            keyspace=args.keyspace,
        )
        if tty:
            sys.stderr.write("\n")
        line = {
            "mode": args.mode,
            "clients": args.clients,
            "nodes": len(eps),
            "keyspace": args.keyspace,
            "seconds": round(r["seconds"], 3),
            "value_size": args.value_size,
            "ops_per_s": round(r["ops_per_s"], 1),
            "lat_us": {k: r["lat_us"][k] for k in ("p50", "p99", "p999")},
            "errors": r["errors"],
        }
        print(json.dumps(line), flush=True)
        return 0
    finally:
        procs.stop_servers(servers)
        if tmp is not None:
            tmp.cleanup()
