"""Type stubs of raftkv's Rust extension (see the docstrings at run time: help(raftkv.Clerk)).

Checked against the built module by ``python -m mypy.stubtest raftkv._raftkv`` (scripts/lint).
The classes are PyO3 classes: made by ``__new__``, and they cannot be subclassed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, final

from typing_extensions import Self

__all__ = [
    "CheckOutcome",
    "Clerk",
    "ClusterError",
    "Error",
    "History",
    "HistoryError",
    "KeyNotFound",
    "LocalCluster",
    "MaybeApplied",
    "Node",
    "ProtocolError",
    "Timeout",
    "TooLarge",
    "VersionMismatch",
    # Private, for `raftkv serve` (PyO3 lists every function it adds in __all__).
    "_log_to_stderr",
    "bench",
    "check_file",
    "check_linearizable",
]

_Bytes = bytes | str

class Error(Exception):
    """Base class of every raftkv error."""

class KeyNotFound(Error, KeyError):
    """The key does not exist (also a ``KeyError``)."""

class VersionMismatch(Error):
    """A conditional put found another version; nothing was written."""

    #: The key's version when the put was refused (None: the server did not say).
    current: int | None
    def __init__(self, message: str, current: int | None = None) -> None: ...

class MaybeApplied(Error):
    """A retried write's outcome cannot be learned: it may or may not have been applied."""

class Timeout(Error, TimeoutError):
    """No majority answered (or no leader was found) within the timeout."""

class TooLarge(Error):
    """The request is larger than the servers accept."""

class ProtocolError(Error):
    """A server answered something the client cannot use."""

class ClusterError(Error):
    """A cluster or node operation failed."""

class HistoryError(Error):
    """A history could not be read."""

@final
class History:
    """A thread-safe record of client operations, for the linearizability checker."""
    def __new__(cls) -> Self: ...
    def to_json(self) -> str: ...
    @staticmethod
    def from_json(s: str | bytes) -> History: ...
    def __len__(self) -> int: ...

@final
class CheckOutcome:
    """The outcome of a linearizability check."""
    @property
    def ok(self) -> bool | None: ...
    @property
    def verdict(self) -> Literal["Ok", "Illegal", "Unknown"]: ...
    @property
    def model(self) -> str: ...
    @property
    def ops(self) -> int: ...
    @property
    def partitions(self) -> int: ...
    @property
    def reason(self) -> str | None: ...
    def visualize(self, path: str | os.PathLike[str]) -> str | os.PathLike[str]: ...
    def __bool__(self) -> bool: ...

def check_linearizable(
    history: History | str | bytes,
    model: str = "kv",
    timeout: float | None = None,
    partition: bool = True,
) -> CheckOutcome: ...
def check_file(
    path: str | os.PathLike[str],
    format: Literal["json", "porcupine-kv", "jepsen-etcd"] = "json",
    model: Literal["kv", "register"] | None = None,
    timeout: float | None = None,
    partition: bool = True,
) -> CheckOutcome: ...

@final
class Clerk:
    """A client of a raftkv cluster."""
    def __new__(
        cls, addresses: Iterable[str] | str, timeout: float = 10.0, history: History | None = None
    ) -> Self: ...
    def get(self, key: _Bytes) -> tuple[bytes, int]: ...
    def put(self, key: _Bytes, value: _Bytes, version: int | None = None) -> int: ...
    def append(self, key: _Bytes, value: _Bytes) -> int: ...
    def delete(self, key: _Bytes) -> None: ...
    def server_status(self, address: str) -> dict[str, Any]: ...
    @property
    def addresses(self) -> list[str]: ...
    @property
    def timeout(self) -> float: ...
    def close(self) -> None: ...
    def __enter__(self) -> Clerk: ...
    def __exit__(self, *args: object) -> bool: ...

@final
class LocalCluster:
    """n nodes in this process over real TCP on 127.0.0.1."""
    def __new__(
        cls,
        n: int = 3,
        storage: Literal["memory", "lmdb"] = "lmdb",
        data_dir: str | os.PathLike[str] | None = None,
        runtime: Literal["tokio", "smol"] = "tokio",
        seed: int | None = None,
        snapshot_threshold: int | None = None,
        request_timeout: float = 2.0,
    ) -> Self: ...
    @property
    def addrs(self) -> list[str]: ...
    @property
    def peer_addrs(self) -> list[str]: ...
    @property
    def n(self) -> int: ...
    @property
    def runtime(self) -> str: ...
    @property
    def storage(self) -> str: ...
    @property
    def data_dir(self) -> str | None: ...
    @property
    def closed(self) -> bool: ...
    def __len__(self) -> int: ...
    def node_dir(self, i: int) -> str | None: ...
    def is_running(self, i: int) -> bool: ...
    def wait_leader(self, timeout: float = 5.0) -> int: ...
    def leader(self) -> int | None: ...
    def status(self, i: int) -> dict[str, Any]: ...
    def crash(self, i: int) -> None: ...
    def restart(self, i: int) -> None: ...
    def partition(self, *groups: Iterable[int]) -> None: ...
    def isolate(self, i: int) -> None: ...
    def heal(self) -> None: ...
    def set_unreliable(
        self, drop: float = 0.1, delay_ms: tuple[int, int] = (0, 27), reorder: bool = True
    ) -> None: ...
    def set_reliable(self) -> None: ...
    def clerk(self, history: History | None = None, timeout: float = 10.0) -> Clerk: ...
    def close(self) -> None: ...
    def __enter__(self) -> LocalCluster: ...
    def __exit__(self, *args: object) -> bool: ...

@final
class Node:
    """One raftkv node, for clusters spread over processes or machines."""
    def __new__(
        cls,
        id: int,
        peers: Mapping[int, str],
        data_dir: str | os.PathLike[str] | None = None,
        storage: Literal["lmdb", "memory"] = "lmdb",
        runtime: Literal["tokio", "smol"] = "tokio",
        client_addrs: Mapping[int, str] | None = None,
        client_port_offset: int = 1000,
        snapshot_threshold: int | None = None,
        cluster_id: int | None = None,
    ) -> Self: ...
    @property
    def id(self) -> int: ...
    @property
    def client_addr(self) -> str: ...
    @property
    def peer_addr(self) -> str: ...
    @property
    def client_addrs(self) -> dict[int, str]: ...
    @property
    def running(self) -> bool: ...
    @property
    def failure(self) -> str | None: ...
    def start(self) -> None: ...
    def status(self) -> dict[str, Any]: ...
    def stop(self) -> None: ...
    def __enter__(self) -> Node: ...
    def __exit__(self, *args: object) -> bool: ...

def _log_to_stderr(format: Literal["text", "json"] = "text") -> None: ...
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
) -> dict[str, Any]: ...
