"""raftkv.Node (one node per object, as for clusters spread over processes) and
``raftkv serve`` processes with the ``get`` / ``put`` commands.

A node's client address is its peer address with port + 1000 unless told otherwise (the
package's documented default), so the ports picked here leave port + 1000 free too.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys

import pytest
from conftest import WAIT, raftkv_cli, wait_until

import raftkv

OFFSET = 1000


def free_ports(count: int) -> list[int]:
    """Ports p, free now, with p + OFFSET free too."""
    ports: list[int] = []
    held = []
    try:
        while len(ports) < count:
            a = socket.socket()
            a.bind(("127.0.0.1", 0))
            p = a.getsockname()[1]
            if p + OFFSET > 65535:
                a.close()
                continue
            b = socket.socket()
            try:
                b.bind(("127.0.0.1", p + OFFSET))
            except OSError:
                a.close()
                b.close()
                continue
            held += [a, b]
            ports.append(p)
    finally:
        for s in held:
            s.close()
    return ports


def leader_of(nodes):
    """The index in ``nodes`` of a running node that says it leads, if any."""
    for i, node in enumerate(nodes):
        if node is None:
            continue
        if node.status()["role"] == "leader":
            return i
    return None


@pytest.mark.slow
@pytest.mark.parametrize(
    "storage,runtime",
    [
        pytest.param("lmdb", "tokio", id="lmdb-tokio"),
        pytest.param("memory", "smol", id="memory-smol"),
    ],
)
def test_three_nodes(tmp_path, storage, runtime):
    ports = free_ports(3)
    peers = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
    clients = [f"127.0.0.1:{p + OFFSET}" for p in ports]
    nodes = []
    try:
        for i in peers:
            kwargs = dict(id=i, peers=peers, storage=storage, runtime=runtime)
            if storage == "lmdb":
                kwargs["data_dir"] = str(tmp_path / f"node{i}")
            node = raftkv.Node(**kwargs)
            node.start()
            nodes.append(node)
        wait_until(lambda: leader_of(nodes) is not None, what="a leader among the Nodes")
        for node in nodes:
            st = node.status()
            for key in ("id", "role", "term", "leader", "commit_index", "applied_index"):
                assert key in st, st

        clerk = raftkv.Clerk(clients, timeout=WAIT)
        assert clerk.put("n", "1") == 1
        # a clerk that knows one node only follows the hint
        for addr in clients:
            assert raftkv.Clerk([addr], timeout=WAIT).get("n") == (b"1", 1)

        # stop a follower: two of three still serve
        leader = leader_of(nodes)
        follower = next(i for i in range(3) if i != leader)
        nodes[follower].stop()
        stopped = nodes[follower]
        nodes[follower] = None
        assert clerk.put("n", "2") == 2
        # and stop the leader too: no majority, the Clerk times out
        nodes[leader].stop()
        nodes[leader] = None
        with pytest.raises(raftkv.Timeout):
            raftkv.Clerk(clients, timeout=1.0).get("n")
        # the follower comes back (same addresses, its durable state): a majority again
        stopped.start()
        nodes[follower] = stopped
        assert clerk.get("n")[0] == b"2"
    finally:
        for node in nodes:
            if node is not None:
                node.stop()


@pytest.mark.slow
@pytest.mark.cli
def test_serve_processes_with_get_and_put(tmp_path):
    ports = free_ports(3)
    peers = ",".join(f"{i + 1}={'127.0.0.1'}:{p}" for i, p in enumerate(ports))
    endpoints = ",".join(f"127.0.0.1:{p + OFFSET}" for p in ports)
    procs = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        for i in range(3):
            procs.append(
                subprocess.Popen(
                    raftkv_cli()
                    + [
                        "serve",
                        "--id",
                        str(i + 1),
                        "--peers",
                        peers,
                        "--data-dir",
                        str(tmp_path / f"node{i + 1}"),
                    ],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                    env=env,
                )
            )

        def put_ok():
            proc = subprocess.run(
                raftkv_cli() + ["put", "served", "yes", "--endpoints", endpoints],
                capture_output=True,
                text=True,
                timeout=60,
                env=env,
            )
            return proc.returncode == 0

        wait_until(put_ok, timeout=30, interval=0.2, what="`raftkv put` against the served nodes")
        proc = subprocess.run(
            raftkv_cli() + ["get", "served", "--endpoints", endpoints],
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
        assert proc.returncode == 0, proc.stderr
        assert "yes" in proc.stdout
        clerk = raftkv.Clerk(endpoints.split(","), timeout=WAIT)
        assert clerk.get("served")[0] == b"yes"

        # SIGINT stops a node cleanly and promptly
        for p in procs:
            p.send_signal(signal.SIGINT)
        for p in procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pytest.fail("`raftkv serve` did not stop within 15 s of SIGINT")
            err = p.stderr.read()
            assert "Traceback" not in err, err
            assert p.returncode in (0, -signal.SIGINT, 128 + signal.SIGINT, 130), (
                p.returncode,
                err,
            )
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX")
def test_node_rejects_bad_arguments(tmp_path):
    peers = {1: "127.0.0.1:7001", 2: "127.0.0.1:7002", 3: "127.0.0.1:7003"}
    with pytest.raises(ValueError):
        raftkv.Node(id=4, peers=peers, data_dir=str(tmp_path), storage="lmdb")
    with pytest.raises(ValueError):
        raftkv.Node(id=1, peers={1: "not an address"}, data_dir=str(tmp_path))
    with pytest.raises(ValueError):
        raftkv.Node(id=1, peers=peers, data_dir=str(tmp_path), runtime="asyncio")
