"""Clusters of ``raftkv serve`` processes on this machine, for benchmarks and experiments.

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

Node ids are 1..n (Raft ids, as ``raftkv serve --id`` takes them); node ``i`` logs to
``DATA_DIR/node{i}.log`` and keeps its LMDB files in ``DATA_DIR/node{i}/``.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence

import raftkv

__all__ = ["free_ports", "start_servers", "stop_servers", "wait_serving"]


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


def start_servers(
    n: int,
    data_dir: str | os.PathLike[str],
    runtime: str = "tokio",
    workers: int = 1,
) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """Starts an ``n``-node cluster of ``raftkv serve`` processes on free ports of 127.0.0.1.

    Each node (ids 1..n) stores its log with LMDB in ``data_dir/node{i}`` and writes its output to
    ``data_dir/node{i}.log``; ``runtime`` and ``workers`` are passed to ``raftkv serve``
    (``--runtime``, ``--workers``). The processes run this interpreter's ``python -m raftkv``
    in their own sessions, so a Ctrl-C in the caller's terminal does not reach them.

    Returns the processes and the nodes' client addresses (``"127.0.0.1:PORT"``, index i is node
    i + 1). The nodes may not serve yet: see :func:`wait_serving`. Stop them with
    :func:`stop_servers`.
    """
    base = os.fspath(data_dir)
    ports = free_ports(2 * n)
    peers = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(n)}
    clients = {i + 1: f"127.0.0.1:{ports[n + i]}" for i in range(n)}
    peers_s = ",".join(f"{k}={v}" for k, v in peers.items())
    clients_s = ",".join(f"{k}={v}" for k, v in clients.items())
    servers: list[subprocess.Popen[bytes]] = []
    try:
        for i in range(1, n + 1):
            with open(os.path.join(base, f"node{i}.log"), "wb") as log:
                servers.append(
                    subprocess.Popen(
                        [
                            sys.executable,
                            "-m",
                            "raftkv",
                            "serve",
                            "--id",
                            str(i),
                            "--peers",
                            peers_s,
                            "--client-addrs",
                            clients_s,
                            "--data-dir",
                            os.path.join(base, f"node{i}"),
                            "--runtime",
                            runtime,
                            "--workers",
                            str(workers),
                        ],
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,
                    )
                )
    except BaseException:
        stop_servers(servers)
        raise
    return servers, list(clients.values())


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
