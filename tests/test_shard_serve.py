"""A sharded store started from the shell (issue 17, "Several groups per process"): the shard
controller's group (3 ``raftkv serve --role controller`` processes) and two replica groups (3
``--role group`` processes and 1), wired with ``raftkv shard join``, written through
``raftkv.ShardClerk``; a shard moves with ``raftkv shard move`` while a member is killed with
SIGKILL and restarted from its data directory. Every acknowledged write is read back, and the
ShardClerks' history is checked linearizable.

Every process is killed at the end of the test whatever happens.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
from pathlib import Path

import pytest
from conftest import Workload, assert_linearizable, raftkv_cli, wait_until

import raftkv
from raftkv.procs import free_ports, stop_servers

SHARDS = 8


class Group:
    """The ``raftkv serve`` processes of one Raft group (the controller's or a replica
    group's), each with its own data directory and log file."""

    def __init__(self, name: str, n: int, role_args: list[str], root: Path):
        ports = free_ports(2 * n)
        self.name = name
        self.peers = ",".join(f"{i + 1}=127.0.0.1:{ports[2 * i]}" for i in range(n))
        self.clients = ",".join(f"{i + 1}=127.0.0.1:{ports[2 * i + 1]}" for i in range(n))
        self.addrs = [f"127.0.0.1:{ports[2 * i + 1]}" for i in range(n)]
        self.role_args = role_args
        self.root = root
        self.procs: list[subprocess.Popen[bytes] | None] = [None] * n
        for i in range(n):
            self.start(i)

    def argv(self, i: int) -> list[str]:
        return raftkv_cli() + [
            "serve",
            *self.role_args,
            "--shards",
            str(SHARDS),
            "--id",
            str(i + 1),
            "--peers",
            self.peers,
            "--client-addrs",
            self.clients,
            "--data-dir",
            str(self.root / f"{self.name}-n{i + 1}"),
            "--workers",
            "1",
        ]

    def log(self, i: int) -> Path:
        return self.root / f"{self.name}-n{i + 1}.log"

    def start(self, i: int) -> None:
        with open(self.log(i), "ab") as log:
            self.procs[i] = subprocess.Popen(
                self.argv(i), stdin=subprocess.DEVNULL, stdout=log, stderr=log
            )

    def kill9(self, i: int) -> None:
        p = self.procs[i]
        assert p is not None and p.poll() is None, f"{self.name} n{i + 1} is not running"
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def wait_serving(self) -> None:
        for i, p in enumerate(self.procs):
            wait_until(
                lambda i=i, p=p: "serving" in self.log(i).read_text() or p.poll() is not None,
                timeout=30,
                what=f"{self.name} n{i + 1} serving",
            )
            assert p is not None and p.poll() is None, self.log(i).read_text()

    def stop(self) -> None:
        stop_servers(p for p in self.procs if p is not None)


def shard_cli(*args: str, controller: list[str]) -> str:
    out = subprocess.run(
        raftkv_cli() + ["shard", *args, "--controller", ",".join(controller), "--timeout", "20"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.slow
@pytest.mark.cli
def test_a_sharded_store_of_serve_processes_joins_moves_and_survives_a_kill9(tmp_path):
    groups: list[Group] = []
    try:
        ctrl = Group("controller", 3, ["--role", "controller"], tmp_path)
        groups.append(ctrl)
        g1 = Group(
            "g1",
            3,
            ["--role", "group", "--gid", "1", "--controller", ",".join(ctrl.addrs)],
            tmp_path,
        )
        groups.append(g1)
        g2 = Group(
            "g2",
            1,
            ["--role", "group", "--gid", "2", "--controller", ",".join(ctrl.addrs)],
            tmp_path,
        )
        groups.append(g2)
        for g in groups:
            g.wait_serving()

        out = shard_cli("join", "1=" + ",".join(g1.addrs), controller=ctrl.addrs)
        assert "joined [1]" in out, out
        config = raftkv.ShardController(ctrl.addrs, timeout=20).config()
        assert set(config["shards"]) == {1} and config["groups"][1] == g1.addrs

        history = raftkv.History()
        acked: dict[str, str] = {}
        stop_writer = threading.Event()

        def writer() -> None:
            # Unique keys, one put each: every acknowledged one must be read back at the end.
            clerk = raftkv.ShardClerk(ctrl.addrs, timeout=30)
            i = 0
            while not stop_writer.is_set():
                key, value = f"acked-{i}", f"v{i}"
                clerk.put(key, value)
                acked[key] = value
                i += 1

        def make_clerk(timeout, history):
            return raftkv.ShardClerk(ctrl.addrs, timeout=timeout, history=history)

        writing = threading.Thread(target=writer, daemon=True)
        with Workload(
            ctrl.addrs, history, clients=4, keys=8, timeout=20.0, make_clerk=make_clerk
        ) as w:
            writing.start()
            w.wait_progress(20, what="on group 1")
            shard_cli("join", "2=" + ",".join(g2.addrs), controller=ctrl.addrs)
            w.wait_progress(20, what="after group 2 joined")
            config = raftkv.ShardController(ctrl.addrs, timeout=20).config()
            assert set(config["shards"]) == {1, 2}
            # Move a shard of group 1 to group 2 while a member of group 1 is killed.
            moving = config["shards"].index(1)
            out = shard_cli("move", str(moving), "2", controller=ctrl.addrs)
            assert f"shard {moving} to group 2" in out, out
            g1.kill9(0)
            w.wait_progress(20, what="after the move, a group 1 member killed")
            g1.start(0)
            ctrl.kill9(1)
            w.wait_progress(20, what="a controller node killed")
            ctrl.start(1)
            w.wait_progress(20, what="after the restarts")
            stop_writer.set()
            writing.join(60)
            assert not writing.is_alive()
        assert not w.errors, w.errors
        assert len(acked) > 20, acked

        # The moved shard is served by group 2: every acknowledged write reads back.
        clerk = raftkv.ShardClerk(ctrl.addrs, timeout=30)
        for key, value in acked.items():
            assert clerk.get(key)[0] == value.encode(), key
        assert raftkv.ShardController(ctrl.addrs, timeout=20).config()["shards"][moving] == 2
        assert_linearizable(history, tmp_path, "shard-serve")
    finally:
        for g in groups:
            with contextlib.suppress(Exception):
                g.stop()
        for g in groups:
            for p in g.procs:
                if p is not None and p.poll() is None:
                    p.kill()


@pytest.mark.cli
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--role", "group", "--controller", "127.0.0.1:1"], "--gid"),
        (["--role", "group", "--gid", "1"], "--controller"),
        (["--gid", "1"], "--role group"),
        (["--shards", "8"], "--role controller or group"),
        (["--role", "controller", "--shards", "0"], "shards"),
    ],
)
def test_serve_role_options_are_checked(args, message):
    peer, client = free_ports(2)
    out = subprocess.run(
        raftkv_cli()
        + ["serve", "--id", "1", "--peers", f"1=127.0.0.1:{peer}", "--storage", "memory"]
        + args,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "RAFTKV_LOG": "warn"},
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr, out.stderr


def test_node_role_arguments_are_checked():
    peers = {1: "127.0.0.1:1"}
    with pytest.raises(ValueError, match="gid"):
        raftkv.Node(1, peers, storage="memory", role="group", controller=["127.0.0.1:2"])
    with pytest.raises(ValueError, match="controller"):
        raftkv.Node(1, peers, storage="memory", role="group", gid=1)
    with pytest.raises(ValueError, match="role"):
        raftkv.Node(1, peers, storage="memory", role="shard")
    with pytest.raises(ValueError, match="TLS"):
        raftkv.Node(
            1, peers, storage="memory", role="controller", tls_cert="c", tls_key="k", tls_ca="a"
        )
    node = raftkv.Node(1, peers, storage="memory", role="controller", shards=4)
    assert node.id == 1
    with pytest.raises(ValueError, match="shards"):
        raftkv.Node(1, peers, storage="memory", shards=4)
