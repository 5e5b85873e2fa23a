"""Sharding from Python: ``ShardedCluster`` (the shard controller and replica groups in this
process over real TCP), ``ShardClerk``, ``key_to_shard``; typed errors; and ShardClerk
histories checked linearizable across joins, moves, leaves and crashes."""

from __future__ import annotations

import pytest
from conftest import Workload, assert_linearizable

import raftkv


@pytest.fixture(scope="module")
def sc():
    with raftkv.ShardedCluster(groups=2, nodes_per_group=3, controllers=1, shards=8, seed=5) as c:
        yield c


def owned(config, gid):
    return sorted(s for s, g in enumerate(config["shards"]) if g == gid)


def test_key_to_shard_is_the_fixed_hash():
    # FNV-1a 32-bit of b"" is 0x811C9DC5, of b"a" 0xE40C292C.
    assert raftkv.key_to_shard(b"", 1 << 16) == 0x811C9DC5 % (1 << 16)
    assert raftkv.key_to_shard("a", 1000) == 0xE40C292C % 1000
    assert raftkv.key_to_shard("a", 16) == raftkv.key_to_shard(b"a", 16)
    assert all(0 <= raftkv.key_to_shard(f"k{i}", 7) < 7 for i in range(100))
    with pytest.raises(ValueError, match="shards"):
        raftkv.key_to_shard("a", 0)
    with pytest.raises(TypeError):
        raftkv.key_to_shard(3, 16)


def test_config_assigns_every_shard_to_the_joined_groups(sc):
    config = sc.config()
    assert config["num"] >= 1
    assert len(config["shards"]) == sc.shards == 8
    assert set(config["groups"]) == {1, 2}
    assert set(config["shards"]) == {1, 2}
    assert abs(len(owned(config, 1)) - len(owned(config, 2))) <= 1
    assert sc.config(0) == {"num": 0, "shards": [0] * 8, "groups": {}}
    assert sc.groups() == [1, 2]


def test_shard_clerk_reads_and_writes_with_typed_errors(sc):
    clerk = sc.clerk()
    assert clerk.put("a", "1") == 1
    assert clerk.append("a", "2") == 2
    assert clerk.get("a") == (b"12", 2)
    with pytest.raises(raftkv.VersionMismatch) as e:
        clerk.put("a", "x", version=1)
    assert e.value.current == 2
    clerk.delete("a")
    with pytest.raises(raftkv.KeyNotFound):
        clerk.get("a")
    # A ShardClerk made from the controller's addresses alone sees the same store.
    other = raftkv.ShardClerk(sc.controller_addrs, timeout=5.0)
    clerk.put("b", "v")
    assert other.get("b")[0] == b"v"
    with pytest.raises(ValueError):
        raftkv.ShardClerk([], timeout=5.0)


def test_controller_refusals_and_bad_arguments_are_typed(sc):
    with pytest.raises(raftkv.ShardError, match="refused"):
        sc.move(0, 42)
    with pytest.raises(raftkv.ShardError):
        sc.move(10_000, 1)
    with pytest.raises(raftkv.ShardError):
        sc.join([1])
    with pytest.raises(raftkv.ClusterError, match="no group 9"):
        sc.group(9)
    with pytest.raises(ValueError):
        sc.group(0)
    with pytest.raises(ValueError):
        raftkv.ShardedCluster(shards=0)
    with pytest.raises(ValueError):
        raftkv.ShardedCluster(storage="tape")


def test_a_move_hands_the_shard_over_and_deletes_the_old_copy(sc):
    clerk = sc.clerk()
    key = "moving"
    shard = raftkv.key_to_shard(key, sc.shards)
    clerk.put(key, "v")
    config = sc.config()
    src = config["shards"][shard]
    dst = 2 if src == 1 else 1
    num = sc.move(shard, dst)
    assert sc.wait_config(num, timeout=30) == num
    assert sc.config()["shards"][shard] == dst
    assert clerk.get(key)[0] == b"v"
    # Challenge 1: each group holds exactly the shards it owns, all serving.
    config = sc.config()
    for gid in sc.groups():
        p = sc.progress(gid)
        assert p is not None and p["num"] == config["num"]
        assert sorted(p["shards"]) == owned(config, gid)
        assert {s["status"] for s in p["shards"].values()} <= {"serving"}
    assert sc.progress(dst)["shards"][shard]["keys"] >= 1
    p = sc.progress(dst)
    assert p["shards"][shard]["bytes"] > 0
    assert p["bytes"] == sum(s["bytes"] for s in p["shards"].values())


def test_group_fault_api(sc):
    g = sc.group(1)
    assert g.gid == 1 and len(g) == 3 and len(g.addrs) == 3
    leader = g.wait_leader()
    assert g.status(leader)["role"] == "leader"
    g.crash(leader)
    assert not g.is_running(leader)
    g.restart(leader)
    g.isolate(0)
    g.heal()
    assert sc.controller.gid == 0
    assert sc.controller.leader() is not None
    assert sc.clerk().put("after-faults", "v") >= 1


@pytest.mark.slow
def test_shard_clerk_history_is_linearizable_across_a_move_a_leave_and_crashes(tmp_path):
    history = raftkv.History()
    with raftkv.ShardedCluster(groups=2, nodes_per_group=3, controllers=3, shards=8, seed=11) as sc:

        def make_clerk(timeout, history):
            return sc.clerk(history=history, timeout=timeout)

        with Workload(
            sc.controller_addrs, history, clients=4, keys=6, timeout=15.0, make_clerk=make_clerk
        ) as w:
            w.wait_progress(20, what="before the changes")
            g3 = sc.add_group(3)
            w.wait_progress(20, what="after a join")
            sc.move(0, g3)
            sc.group(1).crash(0)
            w.wait_progress(20, what="after a move and a crash")
            sc.group(1).restart(0)
            sc.leave([2])
            w.wait_progress(20, what="after a leave")
            leader = sc.controller.wait_leader()
            sc.controller.crash(leader)
            w.wait_progress(20, what="with the controller's leader down")
            sc.controller.restart(leader)
            sc.wait_config(timeout=30)
            w.wait_progress(20, what="after the changes")
        assert not w.errors, w.errors
        assert_linearizable(history, tmp_path, "sharded")
        config = sc.config()
        assert 2 not in config["groups"] and set(config["shards"]) <= {1, g3}
        for gid in sc.groups():
            assert sorted(sc.progress(gid)["shards"]) == owned(config, gid)


def test_shard_cli_config_join_leave_move(sc, capsys, monkeypatch):
    from raftkv.cli import main

    ctrl = ",".join(sc.controller_addrs)
    assert main(["shard", "config", "--controller", ctrl]) == 0
    out = capsys.readouterr().out
    assert out.startswith("config ") and "group 1:" in out
    assert main(["shard", "config", "--num", "0", "--json", "--controller", ctrl]) == 0
    assert '"num": 0' in capsys.readouterr().out
    # A refused change exits 1 with the controller's reason; bad input exits 2.
    assert main(["shard", "move", "0", "77", "--controller", ctrl]) == 1
    assert "refused" in capsys.readouterr().err
    monkeypatch.delenv("RAFTKV_CONTROLLER", raising=False)
    assert main(["shard", "config"]) == 2
    assert "RAFTKV_CONTROLLER" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["shard", "join", "nogid", "--controller", ctrl])
    # Group 2 leaves and joins again by its members' addresses; a shard moves.
    before = sc.config()["num"]
    assert main(["shard", "leave", "2", "--controller", ctrl]) == 0
    assert "[2] left" in capsys.readouterr().out
    assert set(sc.config()["shards"]) == {1}
    group2 = "2=" + ",".join(sc.group(2).addrs)
    monkeypatch.setenv("RAFTKV_CONTROLLER", ctrl)
    assert main(["shard", "join", group2]) == 0
    assert "joined [2]" in capsys.readouterr().out
    dst = sc.config()["shards"][1] % 2 + 1
    assert main(["shard", "move", "1", str(dst)]) == 0
    assert sc.config()["num"] == before + 3
    assert sc.config()["shards"][1] == dst
    sc.wait_config(timeout=30)


@pytest.mark.slow
def test_demo_sharded_runs_and_is_linearizable(tmp_path, capsys):
    from raftkv.cli import main

    html = tmp_path / "demo.html"
    code = main(["demo", "--sharded", "--seconds", "4", "--seed", "3", "--html", str(html)])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "linearizability: linearizable" in out
    assert html.exists()
