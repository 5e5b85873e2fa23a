"""Fault scenarios over real TCP: concurrent clients under partitions, crashes, an unreliable
network; minority partitions; restarting the whole cluster; snapshots and catch-up.

Each scenario runs on a subset of the (storage, runtime) combinations so that the whole suite
stays short; between them every combination is covered.
"""

from __future__ import annotations

import json
import random

import pytest
from conftest import (
    WAIT,
    Workload,
    assert_linearizable,
    combos,
    describe_cluster,
    local_cluster,
    tamper_one_get,
    wait_caught_up,
    wait_until,
)

import raftkv

pytestmark = pytest.mark.slow


def other_than(leader, n):
    return [i for i in range(n) if i != leader]


# --- concurrent clients under random partitions -----------------------------------------------


@pytest.mark.parametrize(
    "storage,runtime,n",
    [
        pytest.param("lmdb", "tokio", 5, id="lmdb-tokio-5"),
        pytest.param("memory", "smol", 3, id="memory-smol-3"),
    ],
)
def test_concurrent_clients_under_random_partitions(storage, runtime, n, tmp_path):
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    print(f"partition seed {seed}")
    history = raftkv.History()
    with local_cluster(storage, runtime, n=n) as cluster:
        # two clients with a short timeout: some of their operations end unknown
        with Workload(
            cluster.addrs, history, clients=4, keys=4, seed=seed, timeout=[5.0, 0.3]
        ) as w:
            w.wait_progress(20, what="before any fault")
            for _ in range(10):
                nodes = list(range(n))
                rng.shuffle(nodes)
                if rng.random() < 0.3:
                    cluster.isolate(nodes[0])
                else:
                    cut = rng.randrange(1, n)
                    cluster.partition(nodes[:cut], nodes[cut:])
                # some group holds a majority: the service keeps answering
                w.wait_progress(10, timeout=WAIT * 2, what="during a partition")
                if rng.random() < 0.3:
                    cluster.heal()
                    w.wait_progress(5, what="after a heal")
            cluster.heal()
            w.wait_progress(20, what="after the final heal")
        w.assert_no_errors()
        wait_caught_up(cluster)
    assert len(history) >= 100
    assert_linearizable(history, tmp_path)

    # the same history with one get made to read a value never written is caught
    tampered = tamper_one_get(history)
    assert len(tampered) == len(history)
    bad = raftkv.check_linearizable(tampered, timeout=60)
    assert bad.ok is False
    bad.visualize(str(tmp_path / "tampered.html"))
    assert "<html" in (tmp_path / "tampered.html").read_text(encoding="utf-8").lower()


# --- a minority makes no progress, and catches up after heal ----------------------------------


@pytest.mark.parametrize(
    "storage,runtime,n",
    [
        pytest.param("memory", "tokio", 3, id="memory-tokio-3"),
        pytest.param("lmdb", "smol", 5, id="lmdb-smol-5"),
    ],
)
def test_minority_partition_no_progress_then_catch_up(storage, runtime, n):
    with local_cluster(storage, runtime, n=n) as cluster:
        clerk = raftkv.Clerk(cluster.addrs, timeout=WAIT)
        for i in range(10):
            clerk.put(f"before{i}", f"v{i}")
        old = cluster.wait_leader(timeout=WAIT)
        minority = [old] + other_than(old, n)[: (n - 1) // 2 - 1]  # 1 of 3, 2 of 5
        majority = [i for i in range(n) if i not in minority]
        assert len(minority) < len(majority)
        cluster.partition(minority, majority)

        # the majority elects a leader of its own and serves
        def new_leader():
            sts = {i: cluster.status(i) for i in majority}
            leaders = [i for i, s in sts.items() if s["role"] == "leader"]
            return leaders  # a list: node 0 must count as found

        new = wait_until(
            new_leader, what="a leader in the majority", detail=lambda: describe_cluster(cluster)
        )[0]
        assert new in majority

        # the isolated old leader stops leading (CheckQuorum)
        wait_until(
            lambda: all(cluster.status(i)["role"] != "leader" for i in minority),
            what="the minority to stop leading",
            detail=lambda: describe_cluster(cluster),
        )
        frozen = {i: cluster.status(i)["commit_index"] for i in minority}

        # the majority makes progress
        for i in range(50):
            assert clerk.put(f"during{i}", f"v{i}") == 1
        leader_commit = cluster.status(new)["commit_index"]

        # the minority did not: its commit index has not moved, and is behind
        for i in minority:
            st = cluster.status(i)
            assert st["commit_index"] == frozen[i], (i, st, frozen)
            assert st["commit_index"] < leader_commit
            assert st["applied_index"] < leader_commit
            assert st["role"] != "leader"

        # a client that can reach only the minority cannot write there
        stuck = raftkv.Clerk([cluster.addrs[minority[0]]], timeout=1.5)
        with pytest.raises(raftkv.Timeout):
            stuck.get("during0")

        cluster.heal()
        wait_caught_up(cluster, minority, target=leader_commit)

        # a Clerk given only a formerly isolated node follows its hint to the leader
        via_old = raftkv.Clerk([cluster.addrs[old]], timeout=WAIT)
        assert via_old.get("during49") == (b"v49", 1)
        assert via_old.put("after", "x") == 1
        for i in range(10):
            assert clerk.get(f"before{i}") == (f"v{i}".encode(), 1)
        wait_caught_up(cluster)


# --- crash and restart of the leader and of followers under load ------------------------------


@pytest.mark.parametrize("storage,runtime", combos(("lmdb", "tokio"), ("memory", "smol")))
def test_crash_restart_under_load(storage, runtime, tmp_path):
    n = 3
    history = raftkv.History()
    with local_cluster(storage, runtime, n=n) as cluster:
        with Workload(cluster.addrs, history, clients=4, keys=4, timeout=[5.0, 0.3]) as w:
            w.wait_progress(20, what="before any crash")
            for _ in range(3):
                leader = cluster.wait_leader(timeout=WAIT)
                cluster.crash(leader)
                w.wait_progress(10, timeout=WAIT * 2, what="after crashing the leader")
                cluster.restart(leader)
                w.wait_progress(10, what="after restarting the old leader")

                leader = cluster.wait_leader(timeout=WAIT)
                follower = other_than(leader, n)[0]
                cluster.crash(follower)
                w.wait_progress(10, timeout=WAIT * 2, what="after crashing a follower")
                cluster.restart(follower)
                w.wait_progress(10, what="after restarting the follower")
            # two crashed at once: no majority until one comes back
            leader = cluster.wait_leader(timeout=WAIT)
            a, b = other_than(leader, n)
            cluster.crash(a)
            cluster.crash(leader)
            cluster.restart(leader)
            cluster.restart(a)
            w.wait_progress(20, timeout=WAIT * 2, what="after a double crash")
        w.assert_no_errors()
        wait_caught_up(cluster)
    assert_linearizable(history, tmp_path)


# --- an unreliable network --------------------------------------------------------------------


@pytest.mark.parametrize("storage,runtime", combos(("memory", "tokio"), ("lmdb", "smol")))
def test_unreliable_network(storage, runtime, tmp_path):
    history = raftkv.History()
    with local_cluster(storage, runtime) as cluster:
        with Workload(cluster.addrs, history, clients=4, keys=3, timeout=[5.0, 0.5]) as w:
            w.wait_progress(20, what="before the network turns unreliable")
            cluster.set_unreliable(drop=0.1, delay_ms=(0, 27), reorder=True)
            w.wait_progress(150, timeout=WAIT * 3, what="on an unreliable network")
            # a leader crash on a lossy network
            crashed = cluster.wait_leader(timeout=WAIT)
            cluster.crash(crashed)
            w.wait_progress(20, timeout=WAIT * 3, what="after a leader crash, lossy network")
            cluster.restart(crashed)
            cluster.set_reliable()
            w.wait_progress(30, what="after set_reliable")
        w.assert_no_errors()
        wait_caught_up(cluster)
    assert_linearizable(history, tmp_path)


def test_duplicated_peer_messages_change_nothing(tmp_path):
    """Half the peer messages arrive twice (and some are lost, delayed and reordered): Raft
    treats the copies as stale repeats, the history stays linearizable."""
    history = raftkv.History()
    with local_cluster("memory", "tokio") as cluster:
        with pytest.raises(ValueError, match="duplicate"):
            cluster.set_unreliable(duplicate=1.5)
        with Workload(cluster.addrs, history, clients=4, keys=3, timeout=[5.0, 0.5]) as w:
            w.wait_progress(20, what="before the network duplicates")
            cluster.set_unreliable(drop=0.05, delay_ms=(0, 10), reorder=True, duplicate=0.5)
            w.wait_progress(150, timeout=WAIT * 3, what="on a duplicating network")
            cluster.set_reliable()
            w.wait_progress(30, what="after set_reliable")
        w.assert_no_errors()
        wait_caught_up(cluster)
    assert_linearizable(history, tmp_path)


# --- restart of the whole cluster ---------------------------------------------------------------


@pytest.mark.parametrize(
    "storage,runtime,snapshot_threshold",
    [
        pytest.param("lmdb", "tokio", None, id="lmdb-tokio"),
        pytest.param("lmdb", "smol", 20, id="lmdb-smol-snapshots"),
    ],
)
def test_whole_cluster_restart_keeps_acknowledged_writes(
    storage, runtime, snapshot_threshold, tmp_path
):
    """Crash every node, restart every node: every acknowledged write is there (with
    snapshot_threshold=20 the state comes back from snapshots plus the log's tail)."""
    history = raftkv.History()
    acked = {}
    with local_cluster(
        storage, runtime, data_dir=str(tmp_path / "data"), snapshot_threshold=snapshot_threshold
    ) as cluster:
        clerk = raftkv.Clerk(cluster.addrs, timeout=WAIT, history=history)
        for i in range(60):
            key = f"key{i % 20}"
            version = clerk.put(key, f"value{i}")
            acked[key] = (f"value{i}".encode(), version)
        clerk.delete("key0")
        del acked["key0"]
        if snapshot_threshold is not None:
            wait_until(
                lambda: all(cluster.status(i)["snapshot_index"] > 0 for i in range(3)),
                what="every node to snapshot",
                detail=lambda: describe_cluster(cluster),
            )
        for rnd in range(2):
            for i in range(3):
                cluster.crash(i)
            order = [2, 0, 1] if rnd == 0 else [0, 1, 2]
            for i in order:
                cluster.restart(i)
            cluster.wait_leader(timeout=WAIT)
            reader = raftkv.Clerk(cluster.addrs, timeout=WAIT, history=history)
            for key, expected in acked.items():
                assert reader.get(key) == expected, key
            with pytest.raises(raftkv.KeyNotFound):
                reader.get("key0")
            # still writable, versions continue
            v = reader.put("key1", f"after-restart-{rnd}")
            assert v == acked["key1"][1] + 1
            acked["key1"] = (f"after-restart-{rnd}".encode(), v)
    assert_linearizable(history, tmp_path)


def test_new_cluster_on_the_same_data_dir_keeps_the_data(tmp_path):
    data = str(tmp_path / "data")
    with local_cluster("lmdb", "tokio", data_dir=data, seed=7) as cluster:
        clerk = raftkv.Clerk(cluster.addrs, timeout=WAIT)
        for i in range(20):
            clerk.put(f"k{i}", f"v{i}")
        clerk.put("k0", "again")
    with local_cluster("lmdb", "tokio", data_dir=data, seed=7) as cluster:
        clerk = raftkv.Clerk(cluster.addrs, timeout=WAIT)
        assert clerk.get("k0") == (b"again", 2)
        for i in range(1, 20):
            assert clerk.get(f"k{i}") == (f"v{i}".encode(), 1)


# --- snapshots ------------------------------------------------------------------------------------


@pytest.mark.parametrize("storage,runtime", combos(("lmdb", "tokio"), ("memory", "smol")))
def test_snapshots_compact_the_log_and_a_lagging_node_catches_up(storage, runtime, tmp_path):
    n = 3
    history = raftkv.History()
    # No trailing log: the lagging node, 200 entries behind, must need a snapshot.
    with local_cluster(storage, runtime, n=n, snapshot_threshold=50, trailing_log=0) as cluster:
        clerk = raftkv.Clerk(cluster.addrs, timeout=WAIT, history=history)
        for i in range(150):
            clerk.put(f"s{i % 30}", f"first{i}")

        def compacted():
            sts = [cluster.status(i) for i in range(n)]
            return all(s["snapshot_index"] > 0 and s["first_index"] > 1 for s in sts) and sts

        sts = wait_until(compacted, what="every node to snapshot and compact its log")
        for s in sts:
            # the log holds no more than about the threshold past the snapshot
            assert s["first_index"] <= s["snapshot_index"] + 1
            assert s["last_index"] - s["snapshot_index"] < 150

        leader = cluster.wait_leader(timeout=WAIT)
        lagging = other_than(leader, n)[0]
        cluster.crash(lagging)
        latest = {}
        for i in range(200):
            key = f"s{i % 30}"
            clerk.put(key, f"second{i}")
            latest[key] = f"second{i}".encode()
        clerk.append("s0", "+tail")
        latest["s0"] += b"+tail"
        clerk.delete("s29")
        del latest["s29"]
        leader = cluster.wait_leader(timeout=WAIT)
        target = cluster.status(leader)["commit_index"]
        # the leader has snapshotted past everything the lagging node has
        wait_until(
            lambda: cluster.status(leader)["snapshot_index"] > sts[lagging]["last_index"],
            what="the leader to snapshot past the lagging node's log",
        )

        cluster.restart(lagging)
        wait_caught_up(cluster, [lagging], target=target)
        st = cluster.status(lagging)
        assert st["snapshot_index"] > sts[lagging]["snapshot_index"]

        # the caught-up node is in every majority once another node is down (the leader, if
        # that is not the lagging node): a new leader must be elected with it, and serve
        leader = cluster.wait_leader(timeout=WAIT)
        cluster.crash(leader if leader != lagging else other_than(lagging, n)[0])
        cluster.wait_leader(timeout=WAIT)
        for key, value in latest.items():
            got, _ = clerk.get(key)
            assert got == value, key
        with pytest.raises(raftkv.KeyNotFound):
            clerk.get("s29")
    doc = json.loads(history.to_json())
    assert len(doc["ops"]) == len(history)
    assert_linearizable(history, tmp_path)


@pytest.mark.parametrize("state", ["memory", "lmdb"])
def test_a_node_down_for_a_few_hundred_writes_catches_up_from_the_trailing_log(state):
    """Issue 20: with a trailing log of 300 entries, a node that was down while the others
    wrote 200 entries and compacted every 50 catches up from the log the others kept, not
    from a snapshot (with an in-memory and with an LMDB state)."""
    n = 3
    with local_cluster(
        "lmdb", "tokio", n=n, snapshot_threshold=50, trailing_log=300, state=state
    ) as cluster:
        clerk = raftkv.Clerk(cluster.addrs, timeout=WAIT)
        for i in range(150):
            clerk.put(f"t{i % 30}", f"first{i}")
        leader = cluster.wait_leader(timeout=WAIT)
        lagging = other_than(leader, n)[0]
        wait_caught_up(cluster, [lagging], target=cluster.status(leader)["commit_index"])
        before = cluster.status(lagging)["last_index"]
        cluster.crash(lagging)
        for i in range(200):
            clerk.put(f"t{i % 30}", f"second{i}")
        leader = cluster.wait_leader(timeout=WAIT)
        target = cluster.status(leader)["commit_index"]
        assert target > before + 150
        cluster.restart(lagging)
        wait_caught_up(cluster, [lagging], target=target)
        raft_id = lagging + 1
        installs = [
            e
            for e in cluster.trace().events
            if e["type"] == "snapshot" and e["how"] == "installed" and e["node"] == raft_id
        ]
        assert not installs, f"node {raft_id} installed a snapshot: {installs}"
        kept = [e for e in cluster.trace().events if e["type"] == "trailing"]
        assert kept, "no node kept a trailing log"


def test_a_trailing_log_above_its_bound_is_refused():
    with pytest.raises(ValueError, match="trailing_log must be at most 10000000"):
        raftkv.LocalCluster(n=3, storage="memory", trailing_log=10_000_001)


# --- a paused leader and one-way partitions (issue 21) ------------------------------------------


@pytest.mark.parametrize("storage,runtime", combos(("lmdb", "tokio"), ("memory", "smol")))
def test_paused_leader_under_load(storage, runtime, tmp_path):
    n = 3
    history = raftkv.History()
    with local_cluster(storage, runtime, n=n) as cluster:
        with Workload(cluster.addrs, history, clients=4, keys=4, timeout=[5.0, 0.3]) as w:
            w.wait_progress(20, what="before any pause")
            for _ in range(2):
                leader = cluster.wait_leader(timeout=WAIT)
                # like SIGSTOP: it keeps its sockets and state, and handles nothing
                cluster.pause(leader)
                assert cluster.is_paused(leader)
                with pytest.raises(raftkv.ClusterError, match="paused"):
                    cluster.status(leader)
                w.wait_progress(10, timeout=WAIT * 2, what="with the leader paused")
                # it resumes believing it leads, and handles what arrived meanwhile, late
                cluster.resume(leader)
                assert not cluster.is_paused(leader)
                w.wait_progress(10, what="after resuming the old leader")
            # a paused follower, crashed while paused, restarts unpaused
            leader = cluster.wait_leader(timeout=WAIT)
            follower = other_than(leader, n)[0]
            cluster.pause(follower)
            w.wait_progress(10, what="with a follower paused")
            cluster.crash(follower)
            cluster.restart(follower)
            assert not cluster.is_paused(follower)
            w.wait_progress(10, what="after restarting the paused follower")
        w.assert_no_errors()
        wait_caught_up(cluster)
    assert_linearizable(history, tmp_path)


@pytest.mark.parametrize("storage,runtime", combos(("memory", "tokio"), ("lmdb", "smol")))
def test_one_way_partitions_under_load(storage, runtime, tmp_path):
    rng = random.Random()
    seed = rng.randrange(2**32)
    rng.seed(seed)
    print(f"one-way partition seed {seed}")
    n = 5
    history = raftkv.History()
    with local_cluster(storage, runtime, n=n) as cluster:
        with Workload(
            cluster.addrs, history, clients=4, keys=4, seed=seed, timeout=[5.0, 0.3]
        ) as w:
            w.wait_progress(20, what="before any fault")
            for _ in range(5):
                leader = cluster.wait_leader(timeout=WAIT)
                if rng.random() < 0.4:
                    # the leader's messages are lost; its followers' still reach it
                    for j in other_than(leader, n):
                        cluster.block(leader, j)
                else:
                    # a majority stays connected; each link between it and the others is cut
                    # one way, in a random direction
                    nodes = list(range(n))
                    rng.shuffle(nodes)
                    majority, rest = nodes[: n // 2 + 1], nodes[n // 2 + 1 :]
                    for o in rest:
                        for m in majority:
                            if rng.random() < 0.5:
                                cluster.block(o, m)
                            else:
                                cluster.block(m, o)
                w.wait_progress(10, timeout=WAIT * 2, what="under one-way partitions")
                if rng.random() < 0.5:
                    cluster.heal()
                else:
                    for a in range(n):
                        for b in range(n):
                            cluster.unblock(a, b)
                w.wait_progress(5, what="after lifting the one-way partitions")
        w.assert_no_errors()
        wait_caught_up(cluster)
    assert len(history) >= 50
    assert_linearizable(history, tmp_path)
