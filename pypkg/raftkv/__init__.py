"""raftkv: a Raft library and a linearizable key/value store (Rust), from Python.

- :class:`LocalCluster`: n nodes in this process over real TCP on 127.0.0.1, with faults
  (crash, restart, partition, isolate, heal, unreliable network); for scripts and tests.
- :class:`Clerk`: a client of any cluster (get / put / conditional put / append / delete).
- :class:`Node`: one node, for clusters spread over processes or machines.
- :class:`History` and :func:`check_linearizable`: record what clients did and check it.
- :class:`Trace` and :func:`visualize_trace`: ``LocalCluster.trace()`` records every node's
  events and the faults; the replay is an animated, self-contained HTML page.
  ``LocalCluster.on_leader_change(callback)`` follows leader changes as they happen.
- Sharding: :class:`ShardedCluster` (a shard controller and replica groups in this process,
  each group with the fault API), :class:`ShardClerk` (a client of any sharded store),
  :func:`key_to_shard`.
- :class:`SimCluster`: the same nodes on the deterministic simulator, in virtual time, with
  the fault API and Clerks (:class:`SimClerk`): the same seed gives the same history and
  trace, byte for byte (``raftkv sim --seed N`` from the command line).
- :mod:`raftkv.aio`: the asyncio client, ``raftkv.aio.Clerk`` (imported on first use).
- Membership: ``LocalCluster.add_node / remove_node / promote / transfer_leader / members``
  and, on any cluster, ``Clerk.member_list / member_add / member_promote / member_remove /
  move_leader``.

Keys and values are ``bytes``; a ``str`` is accepted and encoded as UTF-8; returned values are
``bytes``. Every blocking call releases the GIL and can be interrupted with Ctrl-C.

Exceptions: :class:`Error` is the base of :class:`KeyNotFound`, :class:`VersionMismatch`,
:class:`MaybeApplied`, :class:`Timeout`, :class:`TooLarge` (and its subclass
:class:`StoreFull`), :class:`ProtocolError`, :class:`ClusterError`, :class:`HistoryError`,
:class:`MembershipError`, :class:`ShardError` and :class:`Unauthorized`.

The command line: ``raftkv --help`` (serve, get, put, check, demo, bench, member, move-leader).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any, Literal

from raftkv._raftkv import (
    CheckOutcome,
    Clerk,
    ClusterError,
    Error,
    History,
    HistoryError,
    KeyNotFound,
    LocalCluster,
    MaybeApplied,
    MembershipError,
    Node,
    ProtocolError,
    ShardClerk,
    ShardController,
    ShardedCluster,
    ShardError,
    ShardGroup,
    SimClerk,
    SimCluster,
    StoreFull,
    Timeout,
    TooLarge,
    Trace,
    Unauthorized,
    VersionMismatch,
    check_file,
    check_linearizable,
    key_to_shard,
    visualize_trace,
)
from raftkv._raftkv import (
    bench as _bench,
)

if TYPE_CHECKING:
    from raftkv import aio as aio

#: The result type of :func:`check_linearizable` and :func:`check_file`
#: (``.ok``: True | False | None, ``.visualize(path)``).
CheckResult = CheckOutcome


def _version() -> str:
    # Single-sourced: maturin takes the version from Cargo into the package metadata.
    try:
        return _metadata.version("raftkv")
    except _metadata.PackageNotFoundError:  # imported from a source tree that was never installed
        return "0+unknown"


#: The installed package's version (the Cargo version of the extension crate).
__version__: str = _version()

__all__ = [
    "CheckOutcome",
    "CheckResult",
    "Clerk",
    "ClusterError",
    "Error",
    "History",
    "HistoryError",
    "KeyNotFound",
    "LocalCluster",
    "MaybeApplied",
    "MembershipError",
    "Node",
    "ProtocolError",
    "ShardClerk",
    "ShardController",
    "ShardError",
    "ShardGroup",
    "ShardedCluster",
    "SimClerk",
    "SimCluster",
    "StoreFull",
    "Timeout",
    "TooLarge",
    "Trace",
    "Unauthorized",
    "VersionMismatch",
    "bench",
    "check_file",
    "check_linearizable",
    "key_to_shard",
    "visualize_trace",
]


def __getattr__(name: str) -> Any:
    # raftkv.aio (and asyncio) loads on first use: `import raftkv` stays fast for the CLI.
    if name == "aio":
        import importlib

        return importlib.import_module("raftkv.aio")
    raise AttributeError(f"module 'raftkv' has no attribute {name!r}")


def bench(
    addresses: Iterable[str] | str,
    clients: int = 64,
    seconds: float = 10.0,
    mode: Literal["put", "get", "mixed"] = "put",
    value_size: int = 100,
    warmup: float = 1.0,
    timeout: float = 10.0,
    progress: Callable[[float, int, int], object] | None = None,
    interval: float = 1.0,
    keyspace: int = 10_000,
    read_from: Literal["leader", "any"] = "leader",
) -> dict[str, Any]:
    """Runs ``clients`` closed-loop Clerks (in Rust, on the extension's tokio runtime) against
    the cluster at ``addresses`` for ``warmup`` + ``seconds`` seconds.

    ``mode``: ``"put"`` | ``"get"`` | ``"mixed"`` (gets and puts at random, half each); keys
    are drawn uniformly from ``keyspace`` keys ``k000000..`` (get and mixed write them all
    first, outside the warm-up), values are ``value_size`` random alphanumeric bytes.
    ``progress(elapsed_s, ops, errors)`` is called about every ``interval`` seconds while
    measuring. ``read_from="any"`` sends each get to a node at random (as
    :class:`raftkv.Clerk` does with it): with ``raftkv serve --follower-reads``, followers serve
    them.

    Returns a dict: ``ops``, ``seconds``, ``ops_per_s``, ``errors`` and
    ``lat_us = {"p50", "p99", "p999"}`` (microseconds, measured after the warm-up).
    """
    return _bench(
        addresses,
        clients=clients,
        seconds=seconds,
        mode=mode,
        value_size=value_size,
        warmup=warmup,
        timeout=timeout,
        progress=progress,
        interval=interval,
        keyspace=keyspace,
        read_from=read_from,
    )
