"""Reads that scale with replicas (issue 20): Nodes with ``follower_reads`` and
``lease_reads``, Clerks (threaded and asyncio) with ``read_from="any"``.

A follower's gets are served there (it sends ``read_index`` messages to the leader, counted in
its metrics), and every read sees the writes acknowledged before it.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from conftest import WAIT, Workload, assert_linearizable, local_cluster, wait_caught_up, wait_until
from test_node import OFFSET, free_ports, leader_of

import raftkv
import raftkv.aio


def read_index_sent(node: raftkv.Node) -> int:
    """The node's ReadIndex requests to the leader so far (its metrics)."""
    m = re.search(r'raftkv_messages_sent_total\{kind="read_index"\} (\d+)', node.metrics())
    return int(m.group(1)) if m else 0


@pytest.mark.slow
def test_followers_serve_gets_and_reads_see_every_acknowledged_write():
    ports = free_ports(3)
    peers = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
    clients = [f"127.0.0.1:{p + OFFSET}" for p in ports]
    nodes = []
    try:
        for i in peers:
            node = raftkv.Node(
                id=i, peers=peers, storage="memory", lease_reads=True, follower_reads=True
            )
            node.start()
            nodes.append(node)
        wait_until(lambda: leader_of(nodes) is not None, what="a leader among the Nodes")
        leader = leader_of(nodes)
        follower = next(i for i in range(3) if i != leader)

        writer = raftkv.Clerk(clients, timeout=WAIT)
        # A Clerk that knows only the follower: its gets are served there.
        reader = raftkv.Clerk([clients[follower]], timeout=WAIT, read_from="any")
        before = read_index_sent(nodes[follower])
        for n in range(1, 21):
            assert writer.put("k", str(n)) == n
            assert reader.get("k") == (str(n).encode(), n)
        assert read_index_sent(nodes[follower]) >= before + 20

        async def spread() -> None:
            async with raftkv.aio.Clerk(clients, timeout=WAIT, read_from="any") as ck:
                version = await ck.put("a", "x")
                values = await asyncio.gather(*(ck.get("a") for _ in range(30)))
                assert all(v == (b"x", version) for v in values)

        asyncio.run(spread())
    finally:
        for node in nodes:
            node.stop()


def test_read_from_must_be_leader_or_any():
    with pytest.raises(ValueError, match="read_from"):
        raftkv.Clerk(["127.0.0.1:1"], read_from="followers")
    with pytest.raises(ValueError, match="read_from"):
        raftkv.aio.Clerk(["127.0.0.1:1"], read_from="nearest")  # type: ignore[arg-type]


@pytest.mark.slow
def test_local_cluster_with_leases_and_follower_reads_stays_linearizable_under_faults(tmp_path):
    """A LocalCluster with ``lease_reads`` and ``follower_reads`` on every node, Clerks with
    ``read_from="any"``: an isolated leader, a paused one (its lease must end with the ticks it
    missed) and crashes change nothing a client can see."""
    history = raftkv.History()
    with local_cluster("memory", "tokio", n=3, lease_reads=True, follower_reads=True) as cluster:

        def make_clerk(timeout, history):
            return raftkv.Clerk(cluster.addrs, timeout=timeout, history=history, read_from="any")

        with Workload(
            cluster.addrs, history, clients=4, keys=3, timeout=[5.0, 0.3], make_clerk=make_clerk
        ) as w:
            w.wait_progress(20, what="before any fault")
            for fault in ("isolate", "pause", "crash"):
                leader = cluster.wait_leader(timeout=WAIT)
                if fault == "isolate":
                    cluster.isolate(leader)
                elif fault == "pause":
                    cluster.pause(leader)
                else:
                    cluster.crash(leader)
                w.wait_progress(10, timeout=WAIT * 2, what=f"with the leader {fault}d")
                if fault == "isolate":
                    cluster.heal()
                elif fault == "pause":
                    cluster.resume(leader)
                else:
                    cluster.restart(leader)
                w.wait_progress(10, what=f"after the {fault}")
        w.assert_no_errors()
        wait_caught_up(cluster)
        # The followers served gets: they asked the leader for read indexes.
        sent = sum(
            int(m.group(1))
            for i in range(3)
            if (
                m := re.search(
                    r'raftkv_messages_sent_total\{kind="read_index"\} (\d+)', cluster.metrics(i)
                )
            )
        )
        assert sent > 0
        ck = cluster.clerk(read_from="any")
        version = ck.put("last", "x")
        assert all(ck.get("last") == (b"x", version) for _ in range(10))
        with pytest.raises(ValueError, match="read_from"):
            cluster.clerk(read_from="followers")
    assert_linearizable(history, tmp_path)
