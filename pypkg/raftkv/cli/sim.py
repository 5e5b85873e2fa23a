"""``raftkv sim``: a deterministic simulated run, clients under a random fault schedule drawn
from the seed, then the linearizability verdict and the animated replay.

The same ``--seed`` (and options) gives the same run byte for byte: the same history, trace
and verdict. It runs :meth:`raftkv.SimCluster.run_workload` in virtual time, far faster than
real time.
"""

from __future__ import annotations

import argparse
import os
import time
from typing import TYPE_CHECKING

import raftkv
from raftkv.cli._common import UsageError, err

if TYPE_CHECKING:
    from raftkv.cli._common import Subparsers


def add_parser(sub: Subparsers) -> None:
    """Adds ``sim`` and its options to the command line."""
    s = sub.add_parser(
        "sim",
        help="a deterministic simulated run under faults, its verdict and replay",
        description="Run a simulated cluster (the real node code on the simulation runtime, in "
        "virtual time) with clients under a random fault schedule drawn from --seed, check the "
        "history for linearizability and write the replay. The same seed gives the same run, "
        "byte for byte. Exit 0: linearizable, 1: not, 2: unknown or bad input.",
    )
    s.add_argument("--seed", type=int, required=True, help="the run's seed (0 or more)")
    s.add_argument("--nodes", type=int, default=3, help="1 to 7 (default 3)")
    s.add_argument("--seconds", type=float, default=60.0, help="virtual seconds (default 60)")
    s.add_argument("--clients", type=int, default=4, help="concurrent clients (default 4)")
    s.add_argument("--keys", type=int, default=4, help="keys the clients use (default 4)")
    s.add_argument("--no-faults", action="store_true", help="run the clients without faults")
    s.add_argument("--html", metavar="OUT.html", help="write the animated replay here")
    s.add_argument("--history", metavar="OUT.json", help="write the history (JSON) here")
    s.add_argument("--trace", metavar="OUT.json", help="write the trace (JSON) here")
    s.add_argument(
        "--check-html", metavar="OUT.html", help="write the history's visualization here"
    )
    s.add_argument("--check-timeout", type=float, default=60.0, metavar="SECONDS")
    s.set_defaults(func=run)


def _write(path: str, text: str, what: str) -> None:
    try:
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
    except OSError as e:
        raise UsageError(f"cannot write the {what} to {path}: {e.strerror or e}") from None


def run(args: argparse.Namespace) -> int:
    """Runs the simulation; 0 linearizable, 1 not, 2 unknown."""
    if not 0 <= args.seed < 2**64:
        raise UsageError(f"--seed must be 0 to 2**64 - 1, not {args.seed}")
    t0 = time.perf_counter()
    with raftkv.SimCluster(n=args.nodes, seed=args.seed) as sim:
        report = sim.run_workload(
            seconds=args.seconds,
            clients=args.clients,
            keys=args.keys,
            faults=not args.no_faults,
        )
        trace = sim.trace()
    wall = time.perf_counter() - t0
    history: raftkv.History = report["history"]
    for fault in report["faults"]:
        print(f"  {fault}")
    print(
        f"sim seed {args.seed}: {args.nodes} nodes, {args.clients} clients, "
        f"{report['seconds']:.1f} s virtual in {wall:.2f} s wall; {len(history)} ops "
        f"({report['ok']} answered, {report['failed']} failed), "
        f"{len(report['faults'])} fault events, {len(trace)} trace events"
    )
    result = raftkv.check_linearizable(history, timeout=args.check_timeout)
    verdict = {
        True: "linearizable",
        False: "NOT linearizable",
        None: f"unknown ({result.reason or 'undecided'})",
    }[result.ok]
    print(f"linearizability: {verdict} ({result.partitions} keys checked)")
    if args.history:
        _write(args.history, history.to_json(), "history")
        print(f"history: {os.path.abspath(args.history)}")
    if args.trace:
        _write(args.trace, trace.to_json(), "trace")
        print(f"trace: {os.path.abspath(args.trace)}")
    if args.check_html:
        try:
            result.visualize(args.check_html)
        except OSError as e:
            err(f"cannot write {args.check_html}: {e.strerror or e}")
            return 2
        print(f"visualization: {os.path.abspath(args.check_html)}")
    if args.html:
        try:
            raftkv.visualize_trace(trace, args.html)
        except OSError as e:
            err(f"cannot write {args.html}: {e}")
            return 2
        print(f"replay: {os.path.abspath(args.html)}")
    return {True: 0, False: 1, None: 2}[result.ok]
