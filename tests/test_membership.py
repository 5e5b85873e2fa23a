"""Membership changes (issue 16), over TCP, each history checked linearizable: a rolling
replacement of all three nodes under load, growing 3 -> 5 -> 3, removing the leader, a node that
joins from a snapshot, 20 leader transfers, a partitioned learner that does not stall commits,
MembershipError on a concurrent change, and the ``raftkv member`` / ``move-leader`` / ``serve
--join`` commands against ``raftkv serve`` processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from conftest import (
    WAIT,
    Workload,
    assert_linearizable,
    local_cluster,
    raftkv_cli,
    wait_caught_up,
    wait_until,
)

import raftkv
import raftkv.aio
from raftkv import procs


def test_status_and_members_report_the_configuration():
    with local_cluster("memory", "tokio") as cluster:
        assert cluster.members() == {"voters": [0, 1, 2], "learners": []}
        s = cluster.status(0)
        assert s["voters"] == [0, 1, 2] and s["learners"] == [] and s["removed"] is False
        assert raftkv.Clerk(cluster.addrs).server_status(cluster.addrs[0])["removed"] is False


def test_rolling_replacement_of_every_node_under_load(tmp_path):
    history = raftkv.History()
    with local_cluster("lmdb", "tokio") as cluster:
        with Workload(cluster.addrs, history, clients=3, timeout=15.0) as load:
            load.wait_progress(20)
            for old in range(3):
                new = cluster.add_node(timeout=WAIT)
                load.wait_progress(10, what=f"after adding node {new}")
                cluster.remove_node(old, timeout=WAIT)
                load.wait_progress(10, what=f"after removing node {old}")
            assert cluster.members() == {"voters": [3, 4, 5], "learners": []}
            load.wait_progress(20, what="on the new nodes only")
        load.assert_no_errors()
        assert cluster.n == 6
        with pytest.raises(raftkv.ClusterError, match="removed"):
            cluster.status(0)
    assert_linearizable(history, tmp_path, "rolling_replacement")


def test_grow_to_five_and_shrink_back_to_three_under_load(tmp_path):
    history = raftkv.History()
    with local_cluster("memory", "tokio") as cluster:
        with Workload(cluster.addrs, history, clients=3, timeout=15.0) as load:
            load.wait_progress(10)
            assert [cluster.add_node(timeout=WAIT) for _ in range(2)] == [3, 4]
            assert cluster.members()["voters"] == [0, 1, 2, 3, 4]
            load.wait_progress(10)
            cluster.remove_node(1, timeout=WAIT)
            cluster.remove_node(3, timeout=WAIT)
            assert cluster.members()["voters"] == [0, 2, 4]
            load.wait_progress(10)
        load.assert_no_errors()
    assert_linearizable(history, tmp_path, "grow_shrink")


def test_remove_the_leader(tmp_path):
    history = raftkv.History()
    with local_cluster("memory", "tokio") as cluster:
        with Workload(cluster.addrs, history, clients=2, timeout=15.0) as load:
            load.wait_progress(10)
            leader = cluster.wait_leader(WAIT)
            cluster.remove_node(leader, timeout=WAIT)
            assert leader not in cluster.members()["voters"]
            assert cluster.wait_leader(WAIT) != leader
            load.wait_progress(10, what="after the leader was removed")
        load.assert_no_errors()
    assert_linearizable(history, tmp_path, "remove_leader")


def test_a_node_joins_from_a_snapshot():
    with local_cluster("lmdb", "tokio", snapshot_threshold=50) as cluster:
        clerk = cluster.clerk(timeout=WAIT)
        for k in range(300):
            clerk.put(f"k{k}", f"v{k}")
        leader = cluster.wait_leader(WAIT)
        assert cluster.status(leader)["first_index"] > 1, "the leader compacted its log"
        i = cluster.add_node(timeout=WAIT)
        assert cluster.status(i)["snapshot_index"] > 0, "it caught up from a snapshot"
        cluster.transfer_leader(i, timeout=WAIT)
        assert cluster.leader() == i
        assert clerk.get("k0") == (b"v0", 1)
        assert clerk.get("k299") == (b"v299", 1)


def test_twenty_leader_transfers_under_load(tmp_path):
    history = raftkv.History()
    with local_cluster("memory", "tokio") as cluster:
        with Workload(cluster.addrs, history, clients=2, timeout=15.0) as load:
            for n in range(20):
                target = (cluster.wait_leader(WAIT) + 1 + n % 2) % 3
                cluster.transfer_leader(target, timeout=WAIT)
                assert cluster.status(target)["role"] == "leader"
                load.wait_progress(3, what=f"after transfer {n}")
        load.assert_no_errors()
    assert_linearizable(history, tmp_path, "transfers")


def test_a_partitioned_learner_does_not_stall_commits():
    with local_cluster("memory", "tokio") as cluster:
        i = cluster.add_node(learner=True, timeout=WAIT)
        assert cluster.members() == {"voters": [0, 1, 2], "learners": [i]}
        assert cluster.status(i)["learners"] == [i]
        cluster.isolate(i)
        clerk = cluster.clerk(timeout=WAIT)
        started = time.monotonic()
        for k in range(50):
            clerk.put(f"p{k}", "v")
        assert time.monotonic() - started < 10, "commits went on without the learner"
        cluster.heal()
        wait_caught_up(cluster, nodes=[i])
        cluster.promote(i, timeout=WAIT)
        assert cluster.members()["voters"] == [0, 1, 2, i]


def test_a_change_during_another_raises_membership_error():
    with local_cluster("memory", "tokio") as cluster:
        leader = cluster.wait_leader(WAIT)
        cluster.clerk(timeout=WAIT).put("warm", "up")
        # The leader alone cannot commit: its first change stays pending...
        cluster.isolate(leader)
        first = raftkv.Clerk([cluster.addrs[leader]], timeout=2.0)

        def pending_change():
            with contextlib.suppress(raftkv.Error):  # it cannot commit: times out
                first.member_add(60, "127.0.0.1:9")

        t = threading.Thread(target=pending_change, daemon=True)
        t.start()
        time.sleep(0.1)
        # ...and a second one is refused.
        second = raftkv.Clerk([cluster.addrs[leader]], timeout=2.0)
        with pytest.raises(raftkv.MembershipError, match="in progress") as e:
            second.member_add(61, "127.0.0.1:9", learner=True)
        assert e.value.in_progress is True
        assert isinstance(e.value, raftkv.Error)
        t.join(10)
        cluster.heal()


def test_clerk_member_operations():
    with local_cluster("memory", "tokio") as cluster:
        clerk = raftkv.Clerk([cluster.addrs[0]], timeout=WAIT)
        listed = clerk.member_list()
        assert [m["id"] for m in listed["members"]] == [1, 2, 3]
        assert [m["client_addr"] for m in listed["members"]] == cluster.addrs
        assert all(not m["learner"] and m["peer_addr"] for m in listed["members"])
        target = next(m["id"] for m in listed["members"] if m["id"] != listed["leader"])
        assert clerk.move_leader(target)["leader"] == target
        assert cluster.leader() == target - 1
        added = clerk.member_add(9, "127.0.0.1:9", "127.0.0.1:9", learner=True)
        assert {"id": 9, "peer_addr": "127.0.0.1:9", "client_addr": "127.0.0.1:9",
                "learner": True} in added["members"]  # fmt: skip
        clerk.member_promote(1)  # a voter already: done
        with pytest.raises(raftkv.MembershipError, match="42") as e:
            clerk.member_promote(42)
        assert e.value.in_progress is False
        with pytest.raises(raftkv.MembershipError, match="not a member"):
            clerk.member_remove(42)
        removed = clerk.member_remove(9)
        assert 9 not in [m["id"] for m in removed["members"]]
        with pytest.raises(ValueError):
            clerk.member_add(0, "127.0.0.1:9")


def test_aio_clerk_member_operations():
    """raftkv.aio.Clerk has the threaded Clerk's membership methods, as coroutines, with the
    same answers and errors; they run next to writes on the same Clerk."""

    async def main(cluster):
        async with raftkv.aio.Clerk([cluster.addrs[0]], timeout=WAIT) as clerk:
            listed = await clerk.member_list()
            assert listed == raftkv.Clerk(cluster.addrs, timeout=WAIT).member_list()
            target = next(m["id"] for m in listed["members"] if m["id"] != listed["leader"])
            moved, version = await asyncio.gather(
                clerk.move_leader(target), clerk.put("aio-member", "v")
            )
            assert moved["leader"] == target and version >= 1
            assert cluster.leader() == target - 1
            added = await clerk.member_add(9, "127.0.0.1:9", "127.0.0.1:9", learner=True)
            assert {"id": 9, "peer_addr": "127.0.0.1:9", "client_addr": "127.0.0.1:9",
                    "learner": True} in added["members"]  # fmt: skip
            assert 9 in [m["id"] for m in (await clerk.member_promote(1))["members"]]
            with pytest.raises(raftkv.MembershipError, match="42") as e:
                await clerk.member_promote(42)
            assert e.value.in_progress is False
            with pytest.raises(raftkv.MembershipError, match="not a member"):
                await clerk.member_remove(42)
            removed = await clerk.member_remove(9)
            assert 9 not in [m["id"] for m in removed["members"]]
            with pytest.raises(ValueError):
                await clerk.member_add(0, "127.0.0.1:9")
            with pytest.raises(ValueError):
                await clerk.member_add(5, "")
            assert await clerk.get("aio-member") == (b"v", version)

    with local_cluster("memory", "tokio") as cluster:
        asyncio.run(main(cluster))


# --- the command line ---------------------------------------------------------------------------


def run(args, timeout=60):
    return subprocess.run(
        raftkv_cli() + [str(a) for a in args], capture_output=True, text=True, timeout=timeout
    )


def describe(proc):
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


@pytest.mark.slow
def test_cli_member_list_add_join_and_move_leader(tmp_path):
    servers, addrs = procs.start_servers(3, tmp_path)
    joiner = None
    try:
        procs.wait_serving(addrs, servers, log_dir=tmp_path)
        endpoints = ",".join(addrs)
        proc = run(["member", "list", "--json", "--endpoints", endpoints])
        assert proc.returncode == 0, describe(proc)
        listed = json.loads(proc.stdout)
        assert [m["id"] for m in listed["members"]] == [1, 2, 3]

        # A fourth process joins the running cluster.
        peer, client = procs.free_ports(2)
        with open(tmp_path / "node4.log", "wb") as log:
            joiner = subprocess.Popen(
                [sys.executable, "-m", "raftkv", "serve", "--id", "4",
                 "--peers", f"4=127.0.0.1:{peer}", "--client-addrs", f"4=127.0.0.1:{client}",
                 "--join", endpoints, "--data-dir", os.fspath(tmp_path / "node4")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        clerk = raftkv.Clerk(addrs, timeout=WAIT)

        def joined_as_voter():
            members = clerk.member_list()["members"]
            return any(m["id"] == 4 and not m["learner"] for m in members)

        wait_until(joined_as_voter, 60, what="node 4 to join and be promoted")
        proc = run(["move-leader", "4", "--endpoints", endpoints])
        assert proc.returncode == 0, describe(proc)
        assert "leader" in proc.stdout
        assert clerk.member_list()["leader"] == 4
        clerk.put("after-join", "v")

        # Add (as a learner) and remove by hand; a refusal exits 1 without a traceback.
        proc = run(["member", "add", "7", "127.0.0.1:9", "--learner", "--endpoints", endpoints])
        assert proc.returncode == 0 and "learner" in proc.stdout, describe(proc)
        proc = run(["member", "promote", "42", "--endpoints", endpoints])
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, describe(proc)
        proc = run(["member", "remove", "7", "--endpoints", endpoints])
        assert proc.returncode == 0, describe(proc)
        proc = run(["member", "remove", "4", "--endpoints", endpoints])
        assert proc.returncode == 0, describe(proc)
        assert 4 not in [m["id"] for m in clerk.member_list()["members"]]
        assert clerk.get("after-join")[0] == b"v"
    finally:
        procs.stop_servers(servers + ([joiner] if joiner else []))
