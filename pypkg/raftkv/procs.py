"""Clusters of ``raftkv serve`` processes on this machine, for benchmarks, experiments and fault
tests.

:class:`raftkv.LocalCluster` runs its nodes inside the calling process; the functions here start
each node as its own ``raftkv serve`` process instead (own runtime, own GIL, killable with a
signal), as ``raftkv bench`` and ``benchmarks/restart.py`` do::

    import tempfile
    from raftkv import procs

    with tempfile.TemporaryDirectory() as tmp:
        servers, endpoints = procs.start_servers(3, tmp)
        try:
            procs.wait_serving(endpoints, servers, log_dir=tmp)
            ...  # raftkv.Clerk(endpoints), raftkv.bench(endpoints), ...
        finally:
            procs.stop_servers(servers)

:class:`ProcessCluster` does the same with the faults a process allows: ``crash(i)`` is a
SIGKILL (nothing is flushed or closed: what the node had not made durable is gone, as in a real
crash), ``restart(i)`` starts the process again on its data directory, ``pause(i)`` and
``resume(i)`` are SIGSTOP and SIGCONT::

    with procs.ProcessCluster(3) as cluster:
        leader = cluster.wait_leader()
        cluster.crash(leader)
        cluster.clerk().put(b"k", b"v")       # the other two elect a leader and serve
        cluster.restart(leader)

Node ids are 1..n (Raft ids, as ``raftkv serve --id`` takes them); node ``i`` logs to
``DATA_DIR/node{i}.log`` and keeps its LMDB files in ``DATA_DIR/node{i}/``.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any

import raftkv

__all__ = ["ProcessCluster", "free_ports", "start_servers", "stop_servers", "wait_serving"]


def free_ports(n: int) -> list[int]:
    """Returns ``n`` distinct TCP ports on 127.0.0.1 that were free a moment ago.

    The ports are found by binding to port 0 and closed again before returning, so another
    process may take one in between: callers start their servers right away.
    """
    socks: list[socket.socket] = []
    ports: list[int] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


class _Layout:
    """Where the nodes of an ``n``-node cluster listen and keep their files, and the command
    line that starts node ``id`` (1..n) on them."""

    def __init__(
        self,
        n: int,
        data_dir: str | os.PathLike[str],
        runtime: str,
        workers: int,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.base = os.fspath(data_dir)
        ports = free_ports(2 * n)
        self.peers = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(n)}
        self.clients = {i + 1: f"127.0.0.1:{ports[n + i]}" for i in range(n)}
        self.runtime = runtime
        self.workers = workers
        self.extra_args = list(extra_args)

    def node_dir(self, id: int) -> str:
        return os.path.join(self.base, f"node{id}")

    def log_path(self, id: int) -> str:
        return os.path.join(self.base, f"node{id}.log")

    def argv(self, id: int) -> list[str]:
        join = ",".join
        return [
            sys.executable,
            "-m",
            "raftkv",
            "serve",
            "--id",
            str(id),
            "--peers",
            join(f"{k}={v}" for k, v in self.peers.items()),
            "--client-addrs",
            join(f"{k}={v}" for k, v in self.clients.items()),
            "--data-dir",
            self.node_dir(id),
            "--runtime",
            self.runtime,
            "--workers",
            str(self.workers),
            *self.extra_args,
        ]

    def start(self, id: int, append_log: bool = False) -> subprocess.Popen[bytes]:
        """Starts node ``id``'s process, its output to its log file (appended to when
        ``append_log``), in its own session so a Ctrl-C in the caller's terminal does not reach
        it."""
        with open(self.log_path(id), "ab" if append_log else "wb") as log:
            return subprocess.Popen(
                self.argv(id),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )


def start_servers(
    n: int,
    data_dir: str | os.PathLike[str],
    runtime: str = "tokio",
    workers: int = 1,
    extra_args: Sequence[str] = (),
    state: str = "memory",
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """Starts an ``n``-node cluster of ``raftkv serve`` processes on free ports of 127.0.0.1.

    Each node (ids 1..n) stores its log with LMDB in ``data_dir/node{i}`` and writes its output to
    ``data_dir/node{i}.log``; ``runtime`` and ``workers`` are passed to ``raftkv serve``
    (``--runtime``, ``--workers``) and ``state`` (``--state``: ``memory`` or ``lmdb``), followed
    by ``extra_args`` (more ``raftkv serve`` flags, e.g. ``["--data-bytes-max", "268435456"]``).
    The processes run this interpreter's ``python -m raftkv`` in their own sessions, so a Ctrl-C
    in the caller's terminal does not reach them.

    Returns the processes and the nodes' client addresses (``"127.0.0.1:PORT"``, index i is node
    i + 1). The nodes may not serve yet: see :func:`wait_serving`. Stop them with
    :func:`stop_servers`.
    """
    layout = _Layout(n, data_dir, runtime, workers, ["--state", state, *extra_args])
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(1, n + 1):
            servers.append(layout.start(i))
    except BaseException:
        stop_servers(servers)
        raise
    return servers, list(layout.clients.values())


def stop_servers(servers: Iterable[subprocess.Popen[bytes]], timeout: float = 10.0) -> None:
    """Stops server processes: SIGTERM to each that still runs, then SIGKILL to those that have
    not exited ``timeout`` seconds later. Returns once every process has exited."""
    servers = list(servers)
    for p in servers:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in servers:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def wait_serving(
    endpoints: Sequence[str],
    servers: Iterable[subprocess.Popen[bytes]] = (),
    timeout: float = 30.0,
    log_dir: str | os.PathLike[str] | None = None,
    key: str = "ready",
) -> None:
    """Waits until the cluster at ``endpoints`` commits a write (a put of ``key``).

    Raises :class:`raftkv.ClusterError` as soon as one of ``servers`` has exited (naming the
    directory of their logs, ``log_dir``, when given), and the last :class:`raftkv.Error` (for
    instance :class:`raftkv.Timeout`) when ``timeout`` seconds pass without a committed write.
    """
    servers = list(servers)
    deadline = time.monotonic() + timeout
    clerk = raftkv.Clerk(list(endpoints), timeout=2.0)
    try:
        while True:
            try:
                clerk.put(key, "1")
                return
            except raftkv.Error as e:
                # servers[i] is node i + 1 (as start_servers numbers them)
                dead = [str(i + 1) for i, p in enumerate(servers) if p.poll() is not None]
                if dead:
                    where = f"; see the logs in {os.fspath(log_dir)}" if log_dir else ""
                    raise raftkv.ClusterError(
                        f"node(s) {', '.join(dead)} exited before the cluster served{where}"
                    ) from e
                if time.monotonic() > deadline:
                    raise
    finally:
        clerk.close()


class ProcessCluster:
    """An ``n``-node cluster of ``raftkv serve`` processes on 127.0.0.1, with LMDB storage, and
    the faults of :class:`raftkv.LocalCluster` that a process allows.

    Nodes are indexes 0..n-1 as on ``LocalCluster`` (node ``i`` is Raft id ``i + 1``; its files
    are ``data_dir/node{i+1}/`` and ``data_dir/node{i+1}.log``). ``data_dir=None`` makes a
    temporary directory, removed by :meth:`close`. ``runtime``, ``workers`` and ``extra_args``
    go to every ``raftkv serve``. The processes start at once; :meth:`wait_leader` waits for a
    leader.

    Faults: :meth:`crash` (SIGKILL), :meth:`restart`, :meth:`pause` (SIGSTOP), :meth:`resume`
    (SIGCONT), and :meth:`stop` (SIGTERM, a clean stop). Network faults (``partition``,
    ``isolate``, ``heal``, ``set_unreliable``, ``block``) need the in-process cluster's network
    filter: they raise ``NotImplementedError`` here, use ``raftkv.LocalCluster`` for them.
    """

    def __init__(
        self,
        n: int = 3,
        data_dir: str | os.PathLike[str] | None = None,
        runtime: str = "tokio",
        workers: int = 1,
        extra_args: Sequence[str] = (),
    ) -> None:
        if not 1 <= n <= 64:
            raise ValueError(f"n must be between 1 and 64, got {n}")
        if runtime not in ("tokio", "smol"):
            raise ValueError(f"runtime must be 'tokio' or 'smol', got {runtime!r}")
        self._tmp: str | None = None
        if data_dir is None:
            self._tmp = base = tempfile.mkdtemp(prefix="raftkv-procs-")
        else:
            base = os.fspath(data_dir)
        os.makedirs(base, exist_ok=True)
        self._layout = _Layout(n, base, runtime, workers, extra_args)
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * n
        self._paused: set[int] = set()
        self._probe = raftkv.Clerk(self.addrs, timeout=1.0)
        try:
            for i in range(n):
                self._procs[i] = self._layout.start(i + 1)
        except BaseException:
            self.close()
            raise

    # ---- where things are ----

    @property
    def addrs(self) -> list[str]:
        """The nodes' client addresses, ``"127.0.0.1:PORT"``; index ``i`` is node ``i``."""
        return list(self._layout.clients.values())

    @property
    def data_dir(self) -> str:
        """The directory holding every node's data directory and log."""
        return self._layout.base

    def node_dir(self, i: int) -> str:
        """Node ``i``'s data directory (its LMDB files and WAL segments)."""
        return self._layout.node_dir(self._index(i) + 1)

    def log(self, i: int) -> str:
        """Everything node ``i``'s processes wrote so far (each restart appends)."""
        with open(self._layout.log_path(self._index(i) + 1), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def pid(self, i: int) -> int | None:
        """The process id of node ``i``, or None if it is not running."""
        p = self._procs[self._index(i)]
        return p.pid if p is not None and p.poll() is None else None

    # ---- faults ----

    def crash(self, i: int) -> None:
        """Kills node ``i`` with SIGKILL (a paused one too) and waits for it to be gone."""
        i = self._index(i)
        p = self._running(i)
        p.kill()
        p.wait()
        self._paused.discard(i)

    def stop(self, i: int, timeout: float = 10.0) -> int:
        """Stops node ``i`` cleanly (SIGTERM) and returns its exit code; raises
        :class:`raftkv.Timeout` if it has not exited within ``timeout`` seconds (it is then
        killed)."""
        i = self._index(i)
        p = self._running(i)
        if i in self._paused:
            self.resume(i)
        p.terminate()
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise raftkv.Timeout(f"node {i} was still running {timeout} s after SIGTERM") from None

    def restart(self, i: int) -> None:
        """Starts node ``i`` again on its data directory (its log is appended to). Raises
        :class:`raftkv.ClusterError` if it is running."""
        i = self._index(i)
        p = self._procs[i]
        if p is not None and p.poll() is None:
            raise raftkv.ClusterError(f"node {i} is running: crash or stop it first")
        self._procs[i] = self._layout.start(i + 1, append_log=True)

    def pause(self, i: int) -> None:
        """Stops node ``i``'s process with SIGSTOP: sockets and memory kept, nothing runs."""
        i = self._index(i)
        self._running(i).send_signal(signal.SIGSTOP)
        self._paused.add(i)

    def resume(self, i: int) -> None:
        """Lets a paused node ``i`` run again (SIGCONT)."""
        i = self._index(i)
        self._running(i).send_signal(signal.SIGCONT)
        self._paused.discard(i)

    def is_paused(self, i: int) -> bool:
        """Whether node ``i`` is paused."""
        return self._index(i) in self._paused

    def is_running(self, i: int) -> bool:
        """Whether node ``i``'s process runs (paused or not)."""
        return self.pid(i) is not None

    def wait_exit(self, i: int, timeout: float = 10.0) -> int:
        """Waits for node ``i``'s process to end by itself and returns its exit code; raises
        :class:`raftkv.Timeout` if it still runs after ``timeout`` seconds."""
        p = self._procs[self._index(i)]
        if p is None:
            raise raftkv.ClusterError(f"node {i} was never started")
        try:
            return p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise raftkv.Timeout(f"node {i} still runs after {timeout} s") from None

    def _not_here(self, what: str) -> NotImplementedError:
        return NotImplementedError(
            f"{what} needs the in-process cluster's network filter; ProcessCluster has crash, "
            "restart, pause, resume and stop: use raftkv.LocalCluster for network faults"
        )

    def partition(self, *groups: Iterable[int]) -> None:  # noqa: ARG002 (the signature of LocalCluster's)
        """Not available on processes: raises ``NotImplementedError``."""
        raise self._not_here("partition")

    def isolate(self, i: int) -> None:  # noqa: ARG002 (the signature of LocalCluster's)
        """Not available on processes: raises ``NotImplementedError``."""
        raise self._not_here("isolate")

    def heal(self) -> None:
        """Not available on processes: raises ``NotImplementedError``."""
        raise self._not_here("heal")

    def set_unreliable(self, *args: Any, **kwargs: Any) -> None:  # noqa: ARG002 (the signature of LocalCluster's)
        """Not available on processes: raises ``NotImplementedError``."""
        raise self._not_here("set_unreliable")

    def block(self, from_i: int, to_i: int) -> None:  # noqa: ARG002 (the signature of LocalCluster's)
        """Not available on processes: raises ``NotImplementedError``."""
        raise self._not_here("block")

    # ---- observing ----

    def status(self, i: int) -> dict[str, Any]:
        """Node ``i``'s status as it reports it (``raftkv.Clerk.server_status``), with ``id``
        (Raft id) and ``leader`` as a node index (or None). Raises :class:`raftkv.ClusterError`
        if the node is not running or paused, a :class:`raftkv.Error` if it does not answer."""
        i = self._index(i)
        self._running(i)
        if i in self._paused:
            raise raftkv.ClusterError(f"node {i} is paused")
        s = dict(self._probe.server_status(self.addrs[i]))
        s["id"] = s["raft_id"]
        s["leader"] = None if s["leader"] is None else s["leader"] - 1
        return s

    def leader(self) -> int | None:
        """The node that says it leads in the highest term (of those that answer), or None."""
        best: tuple[int, int] | None = None
        for i in range(len(self._procs)):
            if not self.is_running(i) or i in self._paused:
                continue
            try:
                s = self.status(i)
            except raftkv.Error:
                continue
            if s["role"] == "leader" and (best is None or s["term"] > best[0]):
                best = (s["term"], i)
        return None if best is None else best[1]

    def wait_leader(self, timeout: float = 10.0) -> int:
        """Waits until a node leads and returns it; raises :class:`raftkv.Timeout`."""
        deadline = time.monotonic() + timeout
        while True:
            leader = self.leader()
            if leader is not None:
                return leader
            if time.monotonic() > deadline:
                raise raftkv.Timeout(f"no leader among the processes within {timeout} s")
            time.sleep(0.05)

    def clerk(self, history: raftkv.History | None = None, timeout: float = 10.0) -> raftkv.Clerk:
        """A :class:`raftkv.Clerk` connected to every node."""
        return raftkv.Clerk(self.addrs, timeout=timeout, history=history)

    # ---- closing ----

    def close(self) -> None:
        """Stops every process (SIGKILL if one ignores SIGTERM for 10 s) and removes the data
        directory if this cluster made it."""
        for i in list(self._paused):
            p = self._procs[i]
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGCONT)
        self._paused.clear()
        stop_servers([p for p in self._procs if p is not None])
        self._probe.close()
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None

    def __enter__(self) -> ProcessCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- helpers ----

    def _index(self, i: int) -> int:
        if not 0 <= i < len(self._procs):
            raise IndexError(f"no node {i}: the nodes are 0..{len(self._procs) - 1}")
        return i

    def _running(self, i: int) -> subprocess.Popen[bytes]:
        p = self._procs[i]
        if p is None or p.poll() is not None:
            raise raftkv.ClusterError(f"node {i} is not running")
        return p
