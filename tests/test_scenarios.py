"""Named fault scenarios (``raftkv demo --scenario NAME``, ``raftkv demo --list``): each one's
faults happen, its history stays linearizable, and the snapshot scenario catches up from a
snapshot."""

from __future__ import annotations

import threading
import time

import pytest
from test_cli import describe, run

import raftkv
from raftkv.faults import ACTIONS, SCENARIOS, Nemesis


def test_every_scenario_is_listed_with_its_story():
    proc = run(["demo", "--list"], timeout=60)
    assert proc.returncode == 0, describe(proc)
    lines = proc.stdout.splitlines()
    assert len(lines) == len(SCENARIOS), describe(proc)
    for line, scenario in zip(lines, SCENARIOS.values(), strict=True):
        assert line.split()[0] == scenario.name and scenario.story in line, line


def test_an_unknown_scenario_is_a_usage_error():
    proc = run(["demo", "--scenario", "no-such-scenario"], timeout=60)
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert "leader-crash" in proc.stderr, "the error names the scenarios"


def test_every_scenario_uses_known_actions_and_undoes_its_faults():
    for scenario in SCENARIOS.values():
        actions = [f.action for f in scenario.schedule]
        assert actions and all(a in ACTIONS for a in actions), scenario.name
        # Whatever a scenario breaks it mends before the end: the last fault is a repair, or a
        # membership change (which leaves a healthy cluster of another shape).
        assert actions[-1] in (
            "restart",
            "heal",
            "resume",
            "reliable-network",
            "remove-follower",
            "remove-leader",
        ), scenario.name


def run_scenario(name: str, seconds: float) -> tuple[raftkv.History, list[str], list[dict]]:
    """Runs scenario ``name`` for ``seconds`` on 3 memory nodes with 2 writing clients; returns
    the history, the faults applied (the nemesis' lines) and the cluster's trace events."""
    scenario = SCENARIOS[name]
    history = raftkv.History()
    stop = threading.Event()

    def writer(c: int) -> None:
        clerk = cluster.clerk(history=history, timeout=3.0)
        n = 0
        while not stop.is_set():
            n += 1
            try:
                clerk.put(f"k{n % 3}", f"c{c}-{n}")
            except raftkv.Error:
                time.sleep(0.05)

    with raftkv.LocalCluster(
        n=3,
        storage="memory",
        snapshot_threshold=scenario.snapshot_threshold,
        trailing_log=scenario.trailing_log,
    ) as cluster:
        cluster.wait_leader(timeout=10.0)
        threads = [threading.Thread(target=writer, args=(c,), daemon=True) for c in range(2)]
        for t in threads:
            t.start()
        nemesis = Nemesis(cluster, scenario.schedule)
        t0 = time.monotonic()
        try:
            while (elapsed := time.monotonic() - t0) < seconds:
                nemesis.advance(elapsed / seconds, elapsed)
                time.sleep(0.02)
            nemesis.advance(1.0, seconds)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
        nemesis.heal()
        events = cluster.trace().events
    return history, nemesis.events, events


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in SCENARIOS if n != "mixed"])
def test_each_scenario_applies_its_faults_and_stays_linearizable(name):
    history, done, _ = run_scenario(name, seconds=2.5)
    assert len(done) == len(SCENARIOS[name].schedule), (name, done)
    assert len(history) > 0
    result = raftkv.check_linearizable(history, timeout=60)
    assert result.ok is True, (name, result.reason)


@pytest.mark.slow
def test_snapshot_catch_up_installs_a_snapshot_on_the_restarted_follower():
    history, done, events = run_scenario("snapshot-catch-up", seconds=3.0)
    crashed = int(done[0].split("crash n")[1].split()[0]) + 1  # Raft id of the crashed index
    installs = [
        e
        for e in events
        if e["type"] == "snapshot" and e["how"] == "installed" and e["node"] == crashed
    ]
    assert installs, f"node {crashed} caught up without installing a snapshot: {done}"


@pytest.mark.slow
@pytest.mark.parametrize("name", ["membership", "replace-leader"])
def test_membership_scenarios_end_with_three_voters_and_a_leader_among_them(name):
    history, done, events = run_scenario(name, seconds=3.0)
    assert not any("failed" in line for line in done), done
    assert any("add n3" in line for line in done), done
    removed = [e for e in events if e["type"] == "node_removed"]
    assert len(removed) == 1, [e["type"] for e in events if e["type"].startswith("node")]
    if name == "replace-leader":
        # the removed node led until its removal
        assert "(leader)" in done[-1], done
    memberships = [e for e in events if e["type"] == "membership" and not e["joint"]]
    assert len(memberships[-1]["voters"]) == 3, memberships[-1]
