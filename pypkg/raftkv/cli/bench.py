"""``raftkv bench``: closed-loop load on a cluster (its own ``raftkv serve`` processes unless
``--endpoints`` names a running one); prints one JSON line per client count, and with
``--plot OUT.svg`` draws throughput and latency percentiles against clients."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from typing import TYPE_CHECKING, Any

import raftkv
from raftkv import procs
from raftkv.cli._common import Progress, UsageError, endpoints, workers
from raftkv.plot import PALETTE, Series, write_benchmark_svg

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
    b.add_argument(
        "--clients",
        type=client_counts,
        default="64",
        metavar="N[,N...]",
        help="closed-loop clients; a list (1,8,64) runs one measurement per count on the same "
        "cluster, one JSON line each (default 64)",
    )
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
    b.add_argument(
        "--lease-reads",
        action="store_true",
        help="start the servers with `raftkv serve --lease-reads` (the leader answers gets "
        "under a lease)",
    )
    b.add_argument(
        "--follower-reads",
        action="store_true",
        help="start the servers with `raftkv serve --follower-reads` (followers serve gets)",
    )
    b.add_argument(
        "--read-from",
        choices=("leader", "any"),
        default="leader",
        help="where the clients send gets: the leader (default) or a node at random "
        "(with --follower-reads, followers serve them)",
    )
    b.add_argument(
        "--state",
        choices=("memory", "lmdb"),
        default="memory",
        help="`raftkv serve --state` for the servers it starts (where the KV state lives)",
    )
    b.add_argument(
        "--plot",
        metavar="OUT.svg",
        help="also draw throughput and p50/p99/p99.9 latency against clients (an SVG file)",
    )
    b.set_defaults(func=run)


def client_counts(s: str) -> list[int]:
    """argparse type: ``64`` or ``1,8,64``: each 1..100,000."""
    try:
        counts = [int(p) for p in s.split(",") if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("expected N or N,N,... (integers)") from None
    if not counts or any(not 1 <= c <= 100_000 for c in counts):
        raise argparse.ArgumentTypeError("each client count must be 1..100000")
    return counts


def plot(path: str, mode: str, nodes: int, lines: list[dict[str, Any]]) -> None:
    """Draws the measured lines' throughput and latency percentiles against clients."""
    pts = [(float(r["clients"]), r) for r in lines]
    throughput = [Series(f"raftkv {mode}", [(c, r["ops_per_s"]) for c, r in pts], PALETTE[0])]
    latency = [
        Series(name, [(c, r["lat_us"][key] / 1000.0) for c, r in pts], color, dashed=dashed)
        for name, key, color, dashed in (
            ("p50", "p50", PALETTE[0], True),
            ("p99", "p99", PALETTE[1], False),
            ("p99.9", "p999", PALETTE[3], False),
        )
    ]
    title = f"raftkv bench: {mode}, {nodes} nodes, value {lines[0]['value_size']} B"
    write_benchmark_svg(path, title, throughput, latency)


def run(args: argparse.Namespace) -> int:
    """Runs the benchmark, one JSON line per client count; stops the servers it started."""
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
            extra = ["--lease-reads"] * args.lease_reads
            extra += ["--follower-reads"] * args.follower_reads
            servers, eps = procs.start_servers(
                args.nodes,
                tmp.name,
                args.runtime,
                args.server_workers,
                extra,
                state=args.state,
            )
        procs.wait_serving(
            eps, servers, timeout=30.0, log_dir=tmp.name if tmp else None, key="bench-ready"
        )
        lines = []
        for clients in args.clients:
            lines.append(measure(args, eps, clients))
            print(json.dumps(lines[-1]), flush=True)
        if args.plot:
            try:
                plot(args.plot, args.mode, len(eps), lines)
            except OSError as e:
                raise UsageError(f"cannot write {args.plot}: {e.strerror or e}") from None
            print(f"bench: plot written to {args.plot}", file=sys.stderr, flush=True)
        return 0
    finally:
        procs.stop_servers(servers)
        if tmp is not None:
            tmp.cleanup()


def measure(args: argparse.Namespace, eps: list[str], clients: int) -> dict[str, Any]:
    """One closed-loop measurement with ``clients`` clients; its JSON line as a dict."""
    print(
        f"bench: {clients} clients, mode {args.mode}, value {args.value_size} B, "
        f"warm-up {args.warmup} s, {args.seconds} s measured",
        file=sys.stderr,
        flush=True,
    )
    with Progress(args.seconds) as bar:

        def progress(elapsed: float, ops: int, errors: int) -> None:
            rate = ops / elapsed if elapsed > 0 else 0.0
            bar.update(elapsed, f"{ops} ops {rate:,.0f} ops/s {errors} errors")

        r = raftkv.bench(
            eps,
            clients=clients,
            seconds=args.seconds,
            mode=args.mode,
            value_size=args.value_size,
            warmup=args.warmup,
            progress=progress,
            keyspace=args.keyspace,
            read_from=getattr(args, "read_from", "leader"),
        )
    return {
        "mode": args.mode,
        "clients": clients,
        "nodes": len(eps),
        "keyspace": args.keyspace,
        "seconds": round(r["seconds"], 3),
        "value_size": args.value_size,
        "ops_per_s": round(r["ops_per_s"], 1),
        "lat_us": {k: r["lat_us"][k] for k in ("p50", "p99", "p999")},
        "errors": r["errors"],
        "lease_reads": bool(getattr(args, "lease_reads", False)),
        "follower_reads": bool(getattr(args, "follower_reads", False)),
        "read_from": getattr(args, "read_from", "leader"),
    }
