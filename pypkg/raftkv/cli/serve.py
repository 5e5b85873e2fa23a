"""``raftkv serve``: run one node until SIGINT or SIGTERM."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from types import FrameType
from typing import TYPE_CHECKING

import raftkv
from raftkv.cli._common import ADDRESSES_HELP, UsageError, parse_id_map, workers

if TYPE_CHECKING:
    from raftkv.cli._common import Subparsers


def add_parser(sub: Subparsers) -> None:
    """Adds ``serve`` and its options to the command line."""
    s = sub.add_parser(
        "serve",
        help="run one node until SIGINT/SIGTERM",
        description="Run one node (Raft over TCP, log on LMDB) until SIGINT or SIGTERM. "
        + ADDRESSES_HELP,
    )
    s.add_argument("--id", type=int, required=True, help="this node's Raft id (a key of --peers)")
    s.add_argument(
        "--peers", required=True, help="every node's Raft address: 1=HOST:PORT,2=HOST:PORT,..."
    )
    s.add_argument("--data-dir", help="LMDB directory (required with --storage lmdb)")
    s.add_argument("--storage", choices=("lmdb", "memory"), default="lmdb")
    s.add_argument("--runtime", choices=("tokio", "smol"), default="tokio")
    s.add_argument(
        "--workers",
        type=workers,
        default=None,
        metavar="N",
        help="worker threads of the process's tokio runtime (default 2); 1 suits "
        "several nodes sharing a small machine",
    )
    s.add_argument(
        "--client-addrs",
        help="every node's client address: 1=HOST:PORT,... "
        "(default: peer port + --client-port-offset)",
    )
    s.add_argument(
        "--client-port-offset",
        type=int,
        default=1000,
        help="client port = peer port + this (default 1000)",
    )
    s.add_argument(
        "--snapshot-threshold", type=int, default=None, help="snapshot after this many log entries"
    )
    s.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Starts the node, waits for SIGINT or SIGTERM, stops it; returns the exit code."""
    peers = parse_id_map(args.peers, "--peers")
    client_addrs = parse_id_map(args.client_addrs, "--client-addrs") if args.client_addrs else None
    if args.id not in peers:
        raise UsageError(f"--id {args.id} is not among --peers ({sorted(peers)})")
    if args.storage == "lmdb" and not args.data_dir:
        raise UsageError("--data-dir is required with --storage lmdb")
    if args.workers is not None:
        # Read once, when the runtime starts: nothing has started it yet in this process.
        os.environ["RAFTKV_TOKIO_WORKERS"] = str(args.workers)
    try:
        node = raftkv.Node(
            id=args.id,
            peers=peers,
            data_dir=args.data_dir,
            storage=args.storage,
            runtime=args.runtime,
            client_addrs=client_addrs,
            client_port_offset=args.client_port_offset,
            snapshot_threshold=args.snapshot_threshold,
        )
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.start()
    where = f", {args.data_dir}" if args.data_dir else ""
    print(
        f"raftkv: node {args.id} serving: raft {node.peer_addr}, clients {node.client_addr}"
        f" ({args.storage}{where})",
        file=sys.stderr,
        flush=True,
    )
    try:
        while not stop.wait(0.2):
            pass
    finally:
        node.stop()
        print(f"raftkv: node {args.id} stopped", file=sys.stderr, flush=True)
    return 0
