"""``raftkv status``: one line per node of a running cluster — id, address, role, term, leader,
commit and applied index, and lag (how many committed entries the node has yet to apply,
counted from the highest commit index any node reports).

The nodes are the endpoints given plus every member the cluster lists (``member list``), each
asked for its status once. Exit codes: 0 every node answered, 2 bad input, 3 a node did not
answer (its row says so).
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

import raftkv
from raftkv.cli._common import ENDPOINTS_HELP, endpoints

if TYPE_CHECKING:
    from raftkv.cli._common import Subparsers


def add_parser(sub: Subparsers) -> None:
    """Adds ``status`` and its options to the command line."""
    s = sub.add_parser(
        "status",
        help="a table of every node: role, term, leader, commit/applied index, lag",
        description="Ask every node of a running cluster for its status and print one line "
        "per node (id, address, role, term, leader, commit and applied index, lag: committed "
        "entries not yet applied, from the highest commit index seen). The nodes are the "
        "endpoints plus the members the cluster lists. Exit codes: 0 every node answered, "
        "2 bad input, 3 some node did not answer.",
    )
    s.add_argument("--endpoints", default=None, help=ENDPOINTS_HELP)
    s.add_argument("--json", action="store_true", help="print a JSON list of the rows")
    s.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for each node")
    s.set_defaults(func=run)


def collect(addrs: list[str], timeout: float) -> list[dict[str, Any]]:
    """One row per node: its status, or ``{"address", "error"}`` when it did not answer."""
    clerk = raftkv.Clerk(addrs, timeout=timeout)
    wanted = list(dict.fromkeys(addrs))
    try:
        for m in clerk.member_list()["members"]:
            if m.get("client_addr") and m["client_addr"] not in wanted:
                wanted.append(m["client_addr"])
    except raftkv.Error:
        pass  # no leader to list the members: the endpoints given are all we know
    rows: list[dict[str, Any]] = []
    for addr in wanted:
        try:
            s = clerk.server_status(addr)
        except raftkv.Error as e:
            rows.append({"address": addr, "error": f"{type(e).__name__}: {e}"})
            continue
        rows.append(
            {
                "id": s["raft_id"],
                "address": addr,
                "role": s["role"],
                "term": s["term"],
                "leader": s["leader"],
                "commit_index": s["commit_index"],
                "applied_index": s["applied_index"],
                "last_index": s["last_index"],
                "snapshot_index": s["snapshot_index"],
            }
        )
    top = max((r["commit_index"] for r in rows if "error" not in r), default=0)
    for r in rows:
        if "error" not in r:
            r["lag"] = max(0, top - r["applied_index"])
    rows.sort(key=lambda r: (r.get("id") is None, r.get("id") or 0, r["address"]))
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as an aligned text table."""
    head = ["ID", "ADDRESS", "ROLE", "TERM", "LEADER", "COMMIT", "APPLIED", "LAG"]
    lines = [head]
    for r in rows:
        if "error" in r:
            lines.append(["?", r["address"], "unreachable", "-", "-", "-", "-", "-"])
            continue
        leader = "-" if r["leader"] is None else str(r["leader"])
        lines.append(
            [
                str(r["id"]),
                r["address"],
                r["role"],
                str(r["term"]),
                leader,
                str(r["commit_index"]),
                str(r["applied_index"]),
                str(r["lag"]),
            ]
        )
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    """Prints the table (or JSON); 0 when every node answered, 3 otherwise."""
    if not args.timeout > 0:
        raise ValueError("--timeout must be positive")
    rows = collect(endpoints(args.endpoints), args.timeout)
    print(json.dumps(rows) if args.json else table(rows))
    unreachable = [r["address"] for r in rows if "error" in r]
    return 3 if unreachable else 0
