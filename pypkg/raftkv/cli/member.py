"""``raftkv member list|add|promote|remove`` and ``raftkv move-leader``: the membership of a
running cluster (Raft ids and peer addresses, like etcd's member API).

A node joins as a learner (it receives the log, never votes) and, unless ``--learner``, the
leader promotes it to voter by itself once it has caught up. Start the node's process first
(``raftkv serve --join ...`` does both: it starts and asks to be added), or add it, then start
it. Remove a node, then stop its process. A change refused because another is in progress
exits 1 ("retry once it has completed"), like any other refusal.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import raftkv
from raftkv.cli._common import (
    ENDPOINTS_HELP,
    UsageError,
    add_client_tls_args,
    client_tls,
    client_token,
    endpoints,
    err,
)

if TYPE_CHECKING:
    from raftkv.cli._common import Subparsers


def add_parsers(sub: Subparsers) -> None:
    """Adds ``member`` (list, add, promote, remove) and ``move-leader`` to the command line."""
    m = sub.add_parser(
        "member",
        help="list, add, promote or remove cluster members",
        description="The membership of a running cluster: list, add (as a learner, promoted "
        "once caught up unless --learner), promote, remove. Exit codes: 0 done, 1 refused by "
        "the cluster (another change in progress, not a member...), 2 bad input, 3 no answer.",
    )
    msub = m.add_subparsers(dest="member_command", metavar="SUBCOMMAND")
    msub.required = True

    ls = msub.add_parser("list", help="print the members (id, role, peer and client address)")
    ls.add_argument("--json", action="store_true", help="print the member list as JSON")
    _common(ls)
    ls.set_defaults(func=run_list)

    add = msub.add_parser("add", help="add a node (as a learner; promoted once caught up)")
    add.add_argument("id", type=_node_id, help="the new node's Raft id")
    add.add_argument("peer_addr", help="its Raft (peer) address HOST:PORT")
    add.add_argument("--client-addr", default=None, help="its client address HOST:PORT")
    add.add_argument("--learner", action="store_true", help="keep it a learner (never vote)")
    _common(add)
    add.set_defaults(func=run_add)

    pr = msub.add_parser("promote", help="make a learner a voter")
    pr.add_argument("id", type=_node_id)
    _common(pr)
    pr.set_defaults(func=run_promote)

    rm = msub.add_parser("remove", help="take a node out of the cluster (then stop it)")
    rm.add_argument("id", type=_node_id)
    _common(rm)
    rm.set_defaults(func=run_remove)

    mv = sub.add_parser(
        "move-leader",
        help="hand leadership to another voter",
        description="Hand leadership to voter ID (before maintenance of the leader's machine, "
        "say); returns once ID leads.",
    )
    mv.add_argument("id", type=_node_id)
    _common(mv)
    mv.set_defaults(func=run_move_leader)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--endpoints", help=ENDPOINTS_HELP)
    p.add_argument("--timeout", type=float, default=10.0)
    add_client_tls_args(p)


def _node_id(s: str) -> int:
    """argparse type: a Raft id, >= 1."""
    if not s.isdigit() or int(s) < 1:
        raise argparse.ArgumentTypeError(f"a node id is an integer >= 1, not {s!r}")
    return int(s)


def _clerk(args: argparse.Namespace) -> raftkv.Clerk:
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    return raftkv.Clerk(
        endpoints(args.endpoints),
        timeout=args.timeout,
        tls=client_tls(args),
        token=client_token(args),
    )


def _print_members(members: dict[str, Any]) -> None:
    leader = members["leader"]
    print(f"{'ID':>4}  {'ROLE':<8}  {'PEER ADDRESS':<22}  CLIENT ADDRESS")
    for m in members["members"]:
        role = "learner" if m["learner"] else ("leader" if m["id"] == leader else "voter")
        print(f"{m['id']:>4}  {role:<8}  {m['peer_addr'] or '-':<22}  {m['client_addr'] or '-'}")


def _refused(e: raftkv.MembershipError) -> int:
    err(f"refused: {e}")
    return 1


def run_list(args: argparse.Namespace) -> int:
    """Prints the members, one line each (or JSON with ``--json``)."""
    members = _clerk(args).member_list()
    if args.json:
        print(json.dumps(members))
    else:
        _print_members(members)
    return 0


def run_add(args: argparse.Namespace) -> int:
    """Adds a node; prints the new member list."""
    try:
        members = _clerk(args).member_add(
            args.id, args.peer_addr, client_addr=args.client_addr, learner=args.learner
        )
    except raftkv.MembershipError as e:
        return _refused(e)
    _print_members(members)
    return 0


def run_promote(args: argparse.Namespace) -> int:
    """Promotes a learner; prints the new member list."""
    try:
        members = _clerk(args).member_promote(args.id)
    except raftkv.MembershipError as e:
        return _refused(e)
    _print_members(members)
    return 0


def run_remove(args: argparse.Namespace) -> int:
    """Removes a node; prints the new member list."""
    try:
        members = _clerk(args).member_remove(args.id)
    except raftkv.MembershipError as e:
        return _refused(e)
    _print_members(members)
    return 0


def run_move_leader(args: argparse.Namespace) -> int:
    """Moves leadership; prints the member list once the new leader leads."""
    try:
        members = _clerk(args).move_leader(args.id)
    except raftkv.MembershipError as e:
        return _refused(e)
    _print_members(members)
    return 0
