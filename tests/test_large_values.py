"""Issue 20: 1 MiB values end to end (client frame, Append, WAL, snapshot and InstallSnapshot,
over real TCP with LMDB), and a value past the client frame bound refused with a typed error."""

from __future__ import annotations

import pytest
from conftest import describe_cluster, wait_caught_up, wait_until

import raftkv

MIB = 1 << 20


def value(i: int, size: int = MIB) -> bytes:
    return bytes([i % 251]) * (size - 8) + i.to_bytes(8, "big")


def test_one_mib_values_replicate_snapshot_and_install():
    """80 puts of 1 MiB (past the 64 MiB of log that triggers a snapshot) while one follower is
    down; it comes back through InstallSnapshot of the 1 MiB values, and then has to ack the
    next 1 MiB write alone with the leader. No trailing log: the follower must need the
    snapshot."""
    with raftkv.LocalCluster(n=3, storage="lmdb", trailing_log=0) as cluster:
        leader = cluster.wait_leader(timeout=10.0)
        behind, other = [i for i in range(3) if i != leader]
        clerk = cluster.clerk()
        cluster.crash(behind)
        for i in range(80):
            clerk.put(f"big{i % 8}", value(i))
        wait_until(
            lambda: cluster.status(leader)["snapshot_index"] > 0,
            what="a snapshot on the leader",
            detail=lambda: describe_cluster(cluster),
        )
        cluster.restart(behind)
        wait_caught_up(cluster, [behind], timeout=60.0)
        assert cluster.status(behind)["snapshot_index"] > 0, describe_cluster(cluster)
        cluster.crash(other)
        clerk.put("big0", value(1000))
        assert clerk.get("big0")[0] == value(1000)
        for k in range(1, 8):
            got, _ = clerk.get(f"big{k}")
            assert got == value(72 + k), k


def test_value_past_the_client_frame_bound_is_refused_with_a_typed_error():
    """The client protocol's frames hold at most 4 MiB: a 5 MiB value is refused before it is
    sent, with raftkv.TooLarge, and the Clerk keeps working."""
    with raftkv.LocalCluster(n=1, storage="memory") as cluster:
        cluster.wait_leader(timeout=10.0)
        clerk = cluster.clerk()
        with pytest.raises(raftkv.TooLarge, match="4 MiB"):
            clerk.put("huge", b"x" * (5 * MIB))
        clerk.put("fits", value(3, 3 * MIB))
        assert clerk.get("fits")[0] == value(3, 3 * MIB)
        with pytest.raises(raftkv.KeyNotFound):
            clerk.get("huge")
