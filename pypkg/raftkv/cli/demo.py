"""``raftkv demo``: 3 local nodes, clients, faults, and a linearizability check at the end.

The faults come from :mod:`raftkv.faults`: a named scenario of :data:`~raftkv.faults.SCENARIOS`
(``--scenario NAME``, listed by ``--list``; by default ``mixed``, the
:data:`~raftkv.faults.DEMO_SCHEDULE`); this module adds the clients, the status line and the
summary.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import threading
import time
from typing import TYPE_CHECKING

import raftkv
from raftkv.cli._common import Progress, UsageError, with_progress
from raftkv.faults import SCENARIOS, Nemesis

if TYPE_CHECKING:
    from raftkv.cli._common import Subparsers


def add_parser(sub: Subparsers) -> None:
    """Adds ``demo`` and its options to the command line."""
    m = sub.add_parser(
        "demo",
        help="3 local nodes, faults, a linearizability check",
        description="Start 3 nodes (LocalCluster on LMDB in a temp dir), run clients while "
        "crashing, restarting, partitioning and healing nodes, then check the history and "
        "write raftkv-demo.html (the history) and raftkv-demo-replay.html (an animated replay "
        "of the cluster's trace). Exit 0 when linearizable.",
    )
    m.add_argument("--seconds", type=float, default=12.0)
    m.add_argument("--clients", type=int, default=4)
    m.add_argument("--keys", type=int, default=4)
    m.add_argument("--seed", type=int, default=None)
    m.add_argument("--html", default="raftkv-demo.html")
    m.add_argument(
        "--replay",
        default=None,
        help="where to write the animated replay of the cluster (default: next to --html, "
        "named *-replay.html)",
    )
    m.add_argument("--check-timeout", type=float, default=60.0)
    m.add_argument(
        "--scenario",
        default="mixed",
        metavar="NAME",
        help="which faults: a named scenario (default: mixed; see --list)",
    )
    m.add_argument(
        "--list",
        action="store_true",
        help="list the named scenarios, each with what it shows, and exit",
    )
    m.add_argument(
        "--sharded",
        action="store_true",
        help="a sharded store instead: a shard controller and replica groups, with joins, "
        "leaves and moves under load, crashes and partitions",
    )
    m.set_defaults(func=run)


class Stats:
    """Operation and error counts of the demo's clients (thread-safe)."""

    def __init__(self) -> None:
        """Zero counts."""
        self.lock = threading.Lock()
        self.ops = 0
        self.errors = 0
        self.by_kind: dict[str, int] = {}

    def add(self, ok: bool, kind: str | None = None) -> None:
        """Counts one operation; a failed one also under ``kind`` (the exception's name)."""
        with self.lock:
            self.ops += 1
            if not ok:
                self.errors += 1
                if kind:
                    self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


def client_loop(
    cluster: raftkv.LocalCluster | raftkv.ShardedCluster,
    history: raftkv.History,
    stats: Stats,
    stop: threading.Event,
    seed: int,
    keys: list[str],
) -> None:
    """One demo client until ``stop``: random gets, puts, appends, conditional puts, deletes."""
    rnd = random.Random(seed)
    clerk = cluster.clerk(history=history, timeout=3.0)
    n = 0
    while not stop.is_set():
        n += 1
        key = rnd.choice(keys)
        r = rnd.random()
        try:
            if r < 0.4:
                clerk.get(key)
            elif r < 0.65:
                clerk.put(key, f"c{seed}-{n}")
            elif r < 0.85:
                clerk.append(key, f"[{seed}.{n}]")
            elif r < 0.95:
                try:
                    _, v = clerk.get(key)
                except raftkv.KeyNotFound:
                    v = 0
                stats.add(True)
                clerk.put(key, f"cas{seed}-{n}", version=v)
            else:
                clerk.delete(key)
            stats.add(True)
        except (raftkv.KeyNotFound, raftkv.VersionMismatch):
            stats.add(True)  # definite answers
        except raftkv.Error as e:
            stats.add(False, type(e).__name__)
            time.sleep(0.05)


def replay_path(html: str) -> str:
    """Where the replay goes by default: ``X.html`` -> ``X-replay.html``, next to it."""
    root, ext = os.path.splitext(html)
    return f"{root}-replay{ext or '.html'}"


def status_line(
    cluster: raftkv.LocalCluster, down: set[int], removed: frozenset[int] | set[int] = frozenset()
) -> str:
    """One line of every node's role, term and commit index (``n0: L t3 c120 | ...``); nodes
    taken out of the configuration are left out."""
    parts = []
    for i in range(len(cluster)):
        if i in removed:
            continue
        if i in down:
            parts.append(f"n{i}: DOWN      ")
            continue
        try:
            s = cluster.status(i)
            role = {"leader": "L", "follower": "F", "candidate": "C"}.get(s["role"], "P")
            parts.append(f"n{i}: {role} t{s['term']:<3} c{s['commit_index']:<5}")
        except raftkv.Error:
            parts.append(f"n{i}: ?         ")
    return " | ".join(parts)


def run(args: argparse.Namespace) -> int:
    """Runs the demo; 0 when the history is linearizable, 1 when not, 2 when unknown."""
    if args.list:
        for listed in SCENARIOS.values():
            print(f"{listed.name:<20} {listed.story}")
        return 0
    scenario = SCENARIOS.get(args.scenario)
    if scenario is None:
        raise UsageError(
            f"no scenario {args.scenario!r}: choose one of {', '.join(SCENARIOS)} (raftkv demo "
            "--list says what each shows)"
        )
    if getattr(args, "sharded", False):
        if args.scenario != "mixed":
            raise UsageError("--scenario is for the unsharded demo; --sharded has its own faults")
        from raftkv.cli import demo_sharded

        return demo_sharded.run(args)
    tty = sys.stderr.isatty()
    seconds = args.seconds
    print(
        f"raftkv demo: 3 nodes on LMDB (temp dir), {args.clients} clients, "
        f"~{seconds:.0f} s, scenario {scenario.name}: {scenario.story}",
        file=sys.stderr,
        flush=True,
    )
    history = raftkv.History()
    stats = Stats()
    stop = threading.Event()
    keys = [f"k{i}" for i in range(args.keys)]
    leader_changes = 0
    t0 = time.monotonic()
    with raftkv.LocalCluster(
        n=3,
        storage="lmdb",
        seed=args.seed,
        snapshot_threshold=scenario.snapshot_threshold,
        trailing_log=scenario.trailing_log,
    ) as cluster:
        last_leader = cluster.wait_leader(timeout=10.0)
        threads = [
            threading.Thread(
                target=client_loop, daemon=True, args=(cluster, history, stats, stop, c, keys)
            )
            for c in range(args.clients)
        ]
        for t in threads:
            t.start()
        nemesis = Nemesis(cluster, scenario.schedule)
        last_print = 0.0
        bar = Progress(seconds)
        end = t0 + seconds
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                for event in nemesis.advance((now - t0) / seconds, now - t0):
                    if not tty:
                        print(f"  {event}", file=sys.stderr, flush=True)
                cur = cluster.leader()
                if cur is not None and cur != last_leader:
                    leader_changes += 1
                    last_leader = cur
                if now - last_print >= (0.2 if tty else 2.0):
                    last_print = now
                    note = (
                        f"{status_line(cluster, nemesis.down, nemesis.removed)} | "
                        f"ops {stats.ops} err {stats.errors}"
                    )
                    if tty:
                        bar.update(now - t0, note)
                    else:
                        print(f"[{now - t0:4.1f}s] {note}", file=sys.stderr, flush=True)
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
            bar.close()
        nemesis.heal()
        trace = cluster.trace()
    elapsed = time.monotonic() - t0
    if tty:  # (printed as they happened when stderr is not a terminal)
        print("events:", file=sys.stderr)
        for e in nemesis.events:
            print(f"  {e}", file=sys.stderr)
    errs = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_kind.items())) or "none"
    print(
        f"summary ({scenario.name}): {stats.ops} ops in {elapsed:.1f} s by {args.clients} clients, "
        f"{stats.errors} errors ({errs}), {leader_changes} leader changes, "
        f"{len(history)} ops in the history"
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
    replay = args.replay or replay_path(args.html)
    raftkv.visualize_trace(trace, replay)
    dropped = f", the {trace.dropped} oldest dropped" if trace.dropped else ""
    print(f"replay: {os.path.abspath(replay)} ({len(trace)} events{dropped})")
    return {True: 0, False: 1, None: 2}[result.ok]
