"""Issue 18: ``raftkv.SimCluster``, the real node code on the deterministic simulator in
virtual time, and ``raftkv sim``: the same seed gives the same history, trace and verdict byte
for byte; faults under load stay linearizable; a minute of virtual time runs in far less wall
time; the replay of a simulated run loads in Chromium without errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_replay import attr, console_errors, render

import raftkv
from raftkv.cli import main


def scripted(seed: int) -> tuple[str, str]:
    """A fixed script of Clerk calls and faults; the history's and the trace's JSON."""
    history = raftkv.History()
    with raftkv.SimCluster(n=3, seed=seed) as sim:
        leader = sim.wait_leader()
        clerk = sim.clerk(history=history, timeout=5.0)
        for i in range(10):
            clerk.put(f"k{i % 3}", f"v{i}")
        sim.crash(leader)
        clerk.append("k0", "+after-crash")
        sim.isolate((leader + 1) % 3)
        sim.run_for(seconds=0.5)
        sim.heal()
        sim.restart(leader)
        sim.set_unreliable(drop=0.2, delay_ms=(1, 30))
        assert clerk.get("k0")[0].endswith(b"+after-crash")
        sim.set_reliable()
        sim.run_for(seconds=1.0)
        return history.to_json(), sim.trace().to_json()


def test_the_same_seed_gives_byte_identical_history_and_trace():
    a = scripted(7)
    b = scripted(7)
    assert a[0] == b[0], "history"
    assert a[1] == b[1], "trace"
    ops = json.loads(a[0])["ops"]
    assert len(ops) == 12
    # Virtual nanoseconds: the first put starts after the election, well under a minute.
    assert 0 < ops[0]["call"] < 60 * 10**9


def test_different_seeds_give_different_runs():
    assert scripted(7)[1] != scripted(8)[1]


def test_sim_clerk_raises_the_clerk_exceptions():
    with raftkv.SimCluster(n=3, seed=3) as sim:
        clerk = sim.clerk(timeout=2.0)
        assert clerk.put("k", "v") == 1
        with pytest.raises(raftkv.VersionMismatch) as e:
            clerk.put("k", "w", version=5)
        assert e.value.current == 1
        with pytest.raises(raftkv.KeyNotFound):
            clerk.get("nope")
        clerk.delete("k")
        for i in range(3):
            sim.crash(i)
        t0 = sim.now
        with pytest.raises(raftkv.Timeout):
            clerk.get("k")
        # Virtual time is float seconds: 2.56 - 0.56 may come out as 1.9999999999999997.
        assert sim.now - t0 >= 2.0 - 1e-9, "the timeout passes in virtual time"


def test_fault_api_and_bad_input():
    with raftkv.SimCluster(n=3, seed=11) as sim:
        assert sim.addrs == ["n1", "n2", "n3"] and len(sim) == 3 and sim.seed == 11
        leader = sim.wait_leader()
        assert sim.leader() == leader
        s = sim.status(leader)
        assert s["role"] == "leader" and s["index"] == leader and s["voters"] == [0, 1, 2]
        assert sim.members() == {"voters": [0, 1, 2], "learners": []}
        sim.crash(leader)
        assert not sim.is_running(leader)
        with pytest.raises(raftkv.ClusterError):
            sim.status(leader)
        with pytest.raises(raftkv.ClusterError):
            sim.crash(leader)
        with pytest.raises(IndexError):
            sim.crash(3)
        with pytest.raises(ValueError):
            sim.set_unreliable(drop=2.0)
        with pytest.raises(ValueError):
            sim.run_for(seconds=-1.0)
        new = sim.wait_leader(timeout=10.0)
        assert new != leader
        sim.restart(leader)
        with pytest.raises(raftkv.ClusterError):
            sim.restart(leader)
        sim.pause(new)
        assert sim.is_paused(new)
        with pytest.raises(raftkv.ClusterError):
            sim.status(new)
        assert sim.wait_leader(timeout=10.0) != new
        sim.resume(new)
        sim.block(new, leader)
        sim.run_for(seconds=1.0)
        sim.unblock(new, leader)
        kinds = {e["type"] for e in sim.trace().events}
        assert {"pause", "resume", "block", "unblock", "crash", "restart"} <= kinds
    assert sim.closed
    with pytest.raises(raftkv.ClusterError):
        sim.run_for(seconds=1.0)
    with pytest.raises(ValueError):
        raftkv.SimCluster(n=0)


def test_crashes_and_partitions_under_a_workload_stay_linearizable():
    history = raftkv.History()
    with raftkv.SimCluster(n=5, seed=21) as sim:
        clerks = [sim.clerk(history=history, timeout=5.0) for _ in range(3)]
        for step in range(60):
            clerk = clerks[step % 3]
            key = f"k{step % 4}"
            try:
                if step % 3 == 0:
                    clerk.get(key)
                else:
                    clerk.append(key, f"[{step}]")
            except raftkv.KeyNotFound:
                pass
            if step % 10 == 5:
                sim.crash(step // 10 % 5)
            elif step % 10 == 8:
                sim.restart(step // 10 % 5)
                sim.partition([0, 1, 2], [3, 4])
            elif step % 10 == 9:
                sim.heal()
        # And concurrent clients under the seed's random faults.
        report = sim.run_workload(seconds=20.0, clients=4, history=history)
    assert report["history"] is history
    assert len(report["faults"]) >= 5
    result = raftkv.check_linearizable(history)
    assert result.ok is True, result


def test_a_minute_of_virtual_time_with_faults_runs_in_seconds():
    t0 = time.perf_counter()
    with raftkv.SimCluster(n=3, seed=5) as sim:
        report = sim.run_workload(seconds=60.0, clients=4)
        trace = sim.trace()
    wall = time.perf_counter() - t0
    history = report["history"]
    print(
        f"60 s virtual with {len(report['faults'])} fault events: {wall:.2f} s wall, "
        f"{len(history)} ops, {len(trace)} trace events"
    )
    assert report["seconds"] >= 60.0
    assert report["ok"] > 500
    assert report["ok"] + report["failed"] == len(history)
    assert wall < 30.0, f"{wall:.1f} s of wall time for 60 s of virtual time"


def test_raftkv_sim_replays_a_seed_and_its_html_loads_in_chromium(tmp_path: Path, capsys):
    def run(name: str) -> tuple[int, str, str, str]:
        d = tmp_path / name
        d.mkdir()
        argv = ["sim", "--seed", "9", "--seconds", "15", "--clients", "3"]
        argv += ["--html", str(d / "replay.html"), "--history", str(d / "h.json")]
        argv += ["--trace", str(d / "t.json")]
        code = main(argv)
        out = capsys.readouterr().out
        return code, out, (d / "h.json").read_text(), (d / "t.json").read_text()

    code, out, history, trace = run("a")
    assert code == 0, out
    assert "linearizability: linearizable" in out
    again = run("b")
    assert again[0] == 0
    assert (again[2], again[3]) == (history, trace), "the same seed, the same run"
    assert raftkv.Trace.from_json(trace).nodes == [1, 2, 3]
    dom, log = render(tmp_path / "a" / "replay.html", "t=1", tmp_path)
    assert attr(dom, "data-ready") == "yes", dom[:400]
    assert attr(dom, "data-errors") is None
    assert console_errors(log) == []


def test_raftkv_sim_replays_byte_for_byte_in_another_process(tmp_path: Path):
    """Nothing of a process (hash seeds, addresses, wall time) leaks into a simulated run."""
    outputs = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        out.mkdir()
        argv = [sys.executable, "-m", "raftkv", "sim", "--seed", "12", "--seconds", "10"]
        argv += ["--history", str(out / "h.json"), "--trace", str(out / "t.json")]
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=env)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs.append(((out / "h.json").read_bytes(), (out / "t.json").read_bytes()))
    assert outputs[0] == outputs[1]


def test_raftkv_sim_bad_input_exits_2(capsys):
    assert main(["sim", "--seed", "1", "--nodes", "0"]) == 2
    assert main(["sim", "--seed", "-1"]) == 2
    assert "seed" in capsys.readouterr().err
