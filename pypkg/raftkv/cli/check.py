"""``raftkv check``: check a history file for linearizability."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Literal

import raftkv
from raftkv.cli._common import err, non_negative_float, with_progress

if TYPE_CHECKING:
    from raftkv.cli._common import Subparsers


def add_parser(sub: Subparsers) -> None:
    """Adds ``check`` and its options to the command line."""
    c = sub.add_parser(
        "check",
        help="check a history for linearizability",
        description="Check a history file. Exit 0: linearizable, 1: not, 2: unknown or bad input.",
    )
    c.add_argument("history", metavar="HISTORY")
    c.add_argument(
        "--format",
        choices=("json", "porcupine-kv", "jepsen-etcd"),
        default=None,
        help="default: from the extension (.log jepsen-etcd, .txt porcupine-kv, else json)",
    )
    c.add_argument(
        "--model",
        choices=("kv", "register"),
        default=None,
        help="default: the format's (kv for json and porcupine-kv, register for jepsen-etcd)",
    )
    c.add_argument(
        "--no-partition", action="store_true", help="check the history as one (no per-key split)"
    )
    c.add_argument(
        "--timeout",
        type=non_negative_float,
        default=None,
        metavar="SECONDS",
        help="give up after this long (exit 2)",
    )
    c.add_argument("--html", metavar="OUT.html", help="write the visualization here")
    c.set_defaults(func=run)


HistoryFormat = Literal["json", "porcupine-kv", "jepsen-etcd"]


def guess_format(path: str) -> HistoryFormat:
    """The history format a file name suggests: ``.log`` jepsen-etcd, ``.txt`` porcupine-kv,
    anything else json."""
    if path.endswith(".log"):
        return "jepsen-etcd"
    if path.endswith(".txt"):
        return "porcupine-kv"
    return "json"


def run(args: argparse.Namespace) -> int:
    """Checks the file; 0 linearizable, 1 not, 2 unknown or unreadable."""
    fmt: HistoryFormat = args.format or guess_format(args.history)
    try:
        result = with_progress(
            args.timeout,
            f"checking {args.history}",
            lambda: raftkv.check_file(
                args.history,
                format=fmt,
                model=args.model,
                timeout=args.timeout,
                partition=not args.no_partition,
            ),
        )
    except (raftkv.HistoryError, ValueError, OSError, raftkv.Error) as e:
        msg = str(e).replace("\n", " ")
        if isinstance(e, OSError):
            msg = e.strerror or msg
        err(f"cannot check {args.history}: {msg}")
        return 2
    shape = f"{result.ops} ops, {result.partitions} partitions, model {result.model}"
    if result.ok is True:
        print(f"linearizable ({shape})")
        code = 0
    elif result.ok is False:
        print(f"NOT linearizable ({shape})")
        code = 1
    else:
        print(f"unknown: {result.reason or 'undecided'} ({result.ops} ops, model {result.model})")
        code = 2
    if args.html:
        try:
            result.visualize(args.html)
        except OSError as e:
            err(f"cannot write {args.html}: {e.strerror or e}")
            return 2
        print(f"visualization: {args.html}")
    return code
