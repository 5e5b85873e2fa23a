"""``raftkv shard config|join|leave|move``: the shard controller of a sharded store.

``--controller`` (or ``$RAFTKV_CONTROLLER``) names the controller nodes' client addresses.
``join`` takes each group as ``GID=HOST:PORT[,HOST:PORT...]`` (its members' client addresses).
Exit codes: 0 done, 1 refused by the controller (unknown gid, shard out of range...), 2 bad
input, 3 no answer.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import TYPE_CHECKING, Any

import raftkv
from raftkv.cli._common import UsageError, err

if TYPE_CHECKING:
    from raftkv.cli._common import Subparsers

CONTROLLER_HELP = (
    "client addresses HOST:PORT[,HOST:PORT...] of the shard controller's nodes "
    "(default: $RAFTKV_CONTROLLER)"
)


def add_parsers(sub: Subparsers) -> None:
    """Adds ``shard`` (config, join, leave, move) to the command line."""
    m = sub.add_parser(
        "shard",
        help="the shard controller: show the config, join, leave, move",
        description="Administer a sharded store through its shard controller. Exit codes: 0 "
        "done, 1 refused by the controller, 2 bad input, 3 no answer.",
    )
    msub = m.add_subparsers(dest="shard_command", metavar="SUBCOMMAND")
    msub.required = True

    cf = msub.add_parser("config", help="print a configuration (the latest by default)")
    cf.add_argument("--num", type=_count, default=None, help="the config's number")
    cf.add_argument("--json", action="store_true", help="print it as JSON")
    _common(cf)
    cf.set_defaults(func=run_config)

    jn = msub.add_parser("join", help="join replica groups")
    jn.add_argument("groups", nargs="+", type=_group, help="GID=HOST:PORT[,HOST:PORT...] per group")
    _common(jn)
    jn.set_defaults(func=run_join)

    lv = msub.add_parser("leave", help="replica groups leave (their shards move to others)")
    lv.add_argument("gids", nargs="+", type=_gid)
    _common(lv)
    lv.set_defaults(func=run_leave)

    mv = msub.add_parser("move", help="hand one shard to one group")
    mv.add_argument("shard", type=_count)
    mv.add_argument("gid", type=_gid)
    _common(mv)
    mv.set_defaults(func=run_move)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--controller", help=CONTROLLER_HELP)
    p.add_argument("--timeout", type=float, default=10.0)


def _count(s: str) -> int:
    """argparse type: an integer >= 0."""
    if not s.isdigit():
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, not {s!r}")
    return int(s)


def _gid(s: str) -> int:
    """argparse type: a gid, >= 1."""
    if not s.isdigit() or int(s) < 1:
        raise argparse.ArgumentTypeError(f"a gid is an integer >= 1, not {s!r}")
    return int(s)


def _group(s: str) -> tuple[int, list[str]]:
    """argparse type: ``GID=HOST:PORT[,HOST:PORT...]``."""
    gid, sep, addrs = s.partition("=")
    members = [a.strip() for a in addrs.split(",") if a.strip()]
    if not sep or not members:
        raise argparse.ArgumentTypeError(f"expected GID=HOST:PORT[,HOST:PORT...], not {s!r}")
    return _gid(gid.strip()), members


def controller(args: argparse.Namespace) -> raftkv.ShardController:
    """The controller client of ``--controller`` (or ``$RAFTKV_CONTROLLER``)."""
    text = args.controller or os.environ.get("RAFTKV_CONTROLLER", "")
    addrs = [a.strip() for a in text.split(",") if a.strip()]
    if not addrs:
        raise UsageError(
            "no controller: give --controller HOST:PORT[,HOST:PORT...] or set RAFTKV_CONTROLLER"
        )
    return raftkv.ShardController(addrs, timeout=args.timeout)


def _refused(call: Any) -> int | None:
    """Runs ``call``; prints a refusal and returns 1 for it, else None."""
    try:
        call()
    except raftkv.ShardError as e:
        err(str(e))
        return 1
    return None


def format_config(config: dict[str, Any]) -> str:
    """A config as text: its number, each group's shards and members."""
    lines = [f"config {config['num']}"]
    by_gid: dict[int, list[int]] = {}
    for shard, gid in enumerate(config["shards"]):
        by_gid.setdefault(gid, []).append(shard)
    for gid, addrs in sorted(config["groups"].items()):
        shards = by_gid.get(gid, [])
        lines.append(f"  group {gid}: {len(shards)} shards {shards}  members {','.join(addrs)}")
    if by_gid.get(0):
        lines.append(f"  unassigned: {by_gid[0]}")
    return "\n".join(lines)


def run_config(args: argparse.Namespace) -> int:
    """Prints config ``--num`` (the latest by default)."""
    config = controller(args).config(args.num)
    if args.json:
        print(json.dumps(config))
    else:
        print(format_config(config))
    return 0


def run_join(args: argparse.Namespace) -> int:
    """Joins the groups; prints the config made."""
    groups = dict(args.groups)
    if len(groups) != len(args.groups):
        raise UsageError("a gid is given twice")
    c = controller(args)
    out: list[int] = []
    refused = _refused(lambda: out.append(c.join(groups)))
    if refused is None:
        print(f"config {out[0]}: joined {sorted(groups)}")
    return refused or 0


def run_leave(args: argparse.Namespace) -> int:
    """The groups leave; prints the config made."""
    c = controller(args)
    out: list[int] = []
    refused = _refused(lambda: out.append(c.leave(args.gids)))
    if refused is None:
        print(f"config {out[0]}: {sorted(args.gids)} left")
    return refused or 0


def run_move(args: argparse.Namespace) -> int:
    """Moves one shard; prints the config made."""
    c = controller(args)
    out: list[int] = []
    refused = _refused(lambda: out.append(c.move(args.shard, args.gid)))
    if refused is None:
        print(f"config {out[0]}: shard {args.shard} to group {args.gid}")
    return refused or 0
