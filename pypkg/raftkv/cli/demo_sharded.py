"""``raftkv demo --sharded``: a sharded store in this process (a shard controller of 3 nodes
and 3 replica groups of 3), clients through ShardClerks, and a schedule of joins, leaves,
moves, crashes and partitions; then a linearizability check and the HTML history."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable

import raftkv
from raftkv.cli._common import with_progress
from raftkv.cli.demo import Stats, client_loop
from raftkv.cli.shard import format_config


def _schedule(
    sc: raftkv.ShardedCluster, log: Callable[[str], None]
) -> list[tuple[float, Callable[[], None]]]:
    """The demo's events, each at a fraction of the run."""
    state: dict[str, int] = {}

    def add_group() -> None:
        state["new"] = sc.add_group(3)
        log(f"group {state['new']} started and joined (config {sc.config()['num']})")

    def move() -> None:
        num = sc.move(0, state["new"])
        log(f"shard 0 moved to group {state['new']} (config {num})")

    def crash_member() -> None:
        g = sc.group(1)
        state["crashed"] = g.leader() or 0
        g.crash(state["crashed"])
        log(f"group 1: node {state['crashed']} crashed")

    def restart_member() -> None:
        sc.group(1).restart(state["crashed"])
        log(f"group 1: node {state['crashed']} restarted")

    def partition() -> None:
        g = sc.group(2)
        state["isolated"] = g.leader() or 0
        g.isolate(state["isolated"])
        log(f"group 2: node {state['isolated']} isolated")

    def heal() -> None:
        sc.group(2).heal()
        log("group 2: healed")

    def leave() -> None:
        num = sc.leave([3])
        log(f"group 3 left: its shards move to the others (config {num})")

    def crash_controller() -> None:
        state["ctrl"] = sc.controller.leader() or 0
        sc.controller.crash(state["ctrl"])
        log(f"controller: node {state['ctrl']} (the leader) crashed")

    def restart_controller() -> None:
        sc.controller.restart(state["ctrl"])
        log(f"controller: node {state['ctrl']} restarted")

    def rejoin() -> None:
        num = sc.join([3])
        log(f"group 3 joined again (config {num})")

    return [
        (0.10, add_group),
        (0.20, move),
        (0.30, crash_member),
        (0.40, restart_member),
        (0.45, partition),
        (0.55, heal),
        (0.60, leave),
        (0.70, crash_controller),
        (0.80, restart_controller),
        (0.85, rejoin),
    ]


def run(args: argparse.Namespace) -> int:
    """Runs the sharded demo; 0 when the history is linearizable, 1 when not, 2 when unknown."""
    seconds = args.seconds
    print(
        f"raftkv demo --sharded: a controller of 3 nodes, 3 replica groups of 3, 16 shards, "
        f"{args.clients} clients, ~{seconds:.0f} s of joins, leaves, moves, crashes and "
        "partitions",
        file=sys.stderr,
        flush=True,
    )
    history = raftkv.History()
    stats = Stats()
    stop = threading.Event()
    keys = [f"k{i}" for i in range(max(args.keys, 8))]
    events: list[str] = []
    t0 = time.monotonic()

    def log(what: str) -> None:
        line = f"[{time.monotonic() - t0:4.1f}s] {what}"
        events.append(line)
        print(f"  {line}", file=sys.stderr, flush=True)

    with raftkv.ShardedCluster(
        groups=2, nodes_per_group=3, controllers=3, shards=16, seed=args.seed
    ) as sc:
        threads = [
            threading.Thread(
                target=client_loop, daemon=True, args=(sc, history, stats, stop, c, keys)
            )
            for c in range(args.clients)
        ]
        for t in threads:
            t.start()
        pending = _schedule(sc, log)
        end = t0 + seconds
        try:
            while time.monotonic() < end:
                elapsed = (time.monotonic() - t0) / seconds
                while pending and pending[0][0] <= elapsed:
                    _, event = pending.pop(0)
                    event()
                time.sleep(0.05)
            for _, event in pending:
                event()
            num = sc.wait_config(timeout=30.0)
            log(f"every group installed config {num}")
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=15)
        config = sc.config()
    elapsed = time.monotonic() - t0
    print(format_config(config), file=sys.stderr)
    errs = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_kind.items())) or "none"
    print(
        f"summary: {stats.ops} ops in {elapsed:.1f} s by {args.clients} clients, "
        f"{stats.errors} errors ({errs}), {len(events)} events, {len(history)} ops in the "
        "history"
    )
    result = with_progress(
        args.check_timeout,
        f"checking {len(history)} ops",
        lambda: raftkv.check_linearizable(history, timeout=args.check_timeout),
    )
    result.visualize(args.html)
    verdict = {
        True: "linearizable",
        False: "NOT linearizable",
        None: f"unknown ({result.reason or 'undecided'})",
    }[result.ok]
    print(f"linearizability: {verdict} ({result.partitions} keys checked)")
    print(f"visualization: {os.path.abspath(args.html)}")
    return {True: 0, False: 1, None: 2}[result.ok]
