"""``raftkv get``, ``raftkv put`` and ``raftkv delete``: one request to a running cluster."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

import raftkv
from raftkv.cli._common import (
    ENDPOINTS_HELP,
    add_client_tls_args,
    client_tls,
    client_token,
    endpoints,
    err,
)

if TYPE_CHECKING:
    from raftkv.cli._common import Subparsers


def add_parsers(sub: Subparsers) -> None:
    """Adds ``get``, ``put`` and ``delete`` and their options to the command line."""
    g = sub.add_parser("get", help="read a key", description="Print KEY's value on stdout.")
    g.add_argument("key")
    g.add_argument("--endpoints", help=ENDPOINTS_HELP)
    g.add_argument("--timeout", type=float, default=10.0)
    add_client_tls_args(g)
    g.add_argument("--version", action="store_true", help="also print the version on stderr")
    g.set_defaults(func=run_get)

    w = sub.add_parser("put", help="write a key", description="Write KEY; print its new version.")
    w.add_argument("key")
    w.add_argument("value")
    w.add_argument(
        "--version",
        type=int,
        default=None,
        help="conditional: only if the key's version is N (0: must not exist)",
    )
    w.add_argument("--endpoints", help=ENDPOINTS_HELP)
    w.add_argument("--timeout", type=float, default=10.0)
    add_client_tls_args(w)
    w.set_defaults(func=run_put)

    d = sub.add_parser("delete", help="delete a key")
    d.add_argument("key")
    d.add_argument("--endpoints", help=ENDPOINTS_HELP)
    d.add_argument("--timeout", type=float, default=10.0)
    add_client_tls_args(d)
    d.set_defaults(func=run_delete)


def run_get(args: argparse.Namespace) -> int:
    """Prints the key's value (and with ``--version`` its version on stderr); 1 if missing."""
    clerk = raftkv.Clerk(
        endpoints(args.endpoints),
        timeout=args.timeout,
        tls=client_tls(args),
        token=client_token(args),
    )
    try:
        value, version = clerk.get(args.key)
    except raftkv.KeyNotFound:
        err(f"no such key: {args.key}")
        return 1
    out = sys.stdout.buffer
    out.write(value)
    out.write(b"\n")
    out.flush()
    if args.version:
        print(f"version {version}", file=sys.stderr)
    return 0


def run_put(args: argparse.Namespace) -> int:
    """Writes the key and prints its new version; 1 when a conditional put is refused."""
    clerk = raftkv.Clerk(
        endpoints(args.endpoints),
        timeout=args.timeout,
        tls=client_tls(args),
        token=client_token(args),
    )
    try:
        version = clerk.put(args.key, args.value, version=args.version)
    except raftkv.VersionMismatch as e:
        err(str(e))
        return 1
    except raftkv.KeyNotFound:
        err(f"no such key: {args.key} (a conditional put with --version > 0 needs the key)")
        return 1
    print(version)
    return 0


def run_delete(args: argparse.Namespace) -> int:
    """Deletes the key; 1 if it does not exist."""
    clerk = raftkv.Clerk(
        endpoints(args.endpoints),
        timeout=args.timeout,
        tls=client_tls(args),
        token=client_token(args),
    )
    try:
        clerk.delete(args.key)
    except raftkv.KeyNotFound:
        err(f"no such key: {args.key}")
        return 1
    return 0
