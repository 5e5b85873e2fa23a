"""Issue 18: the cluster trace from Python (``LocalCluster.trace()``, ``raftkv.Trace``) and
``LocalCluster.on_leader_change``, driven by the trace's events."""

from __future__ import annotations

import json
import threading

import pytest

import raftkv


def kinds(trace: raftkv.Trace) -> dict[str, int]:
    counts: dict[str, int] = {}
    for e in trace.events:
        counts[e["type"]] = counts.get(e["type"], 0) + 1
    return counts


def test_trace_holds_the_nodes_events_and_the_faults(tmp_path):
    with raftkv.LocalCluster(n=3, storage="memory", seed=3) as cluster:
        leader = cluster.wait_leader()
        clerk = cluster.clerk()
        for i in range(10):
            clerk.put(f"k{i}", "v")
        cluster.isolate(leader)
        cluster.heal()
        cluster.crash(leader)
        clerk.put("after", "crash")
        cluster.restart(leader)
        trace = cluster.trace()
    assert trace.nodes == [1, 2, 3]
    assert trace.dropped == 0 and trace.events_max == 200_000
    counts = kinds(trace)
    for kind in (
        "start",
        "role",
        "vote",
        "append",
        "commit",
        "apply",
        "send",
        "recv",
        "membership",
    ):
        assert counts.get(kind, 0) > 0, (kind, counts)
    for fault in ("partition", "heal", "crash", "restart"):
        assert counts.get(fault) == 1, (fault, counts)
    crash = next(e for e in trace.events if e["type"] == "crash")
    assert crash["node"] == leader + 1, "events name nodes by Raft id (index + 1)"
    assert any(e["type"] == "role" and e["role"] == "leader" for e in trace.events)
    times = [e["t_us"] for e in trace.events]
    assert times[0] >= 0 and max(times) < 120e6

    path = tmp_path / "trace.json"
    trace.save(path)
    doc = json.loads(path.read_text())
    assert doc["format"] == "raftkv-trace" and doc["version"] == 1
    again = raftkv.Trace.load(path)
    assert len(again) == len(trace) and again.to_json() == trace.to_json()
    assert raftkv.Trace.from_json(trace.to_json()).events == trace.events
    assert "Trace(nodes=[1, 2, 3]" in repr(trace)


def test_a_bad_trace_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(
        '{"format": "something-else", "version": 1, "nodes": [], "events_max": 1, '
        '"dropped": 0, "events": []}'
    )
    with pytest.raises(ValueError, match="not a raftkv trace"):
        raftkv.Trace.load(bad)
    with pytest.raises(ValueError, match="not a raftkv trace"):
        raftkv.Trace.from_json("[1, 2")
    with pytest.raises(OSError):
        raftkv.Trace.load(tmp_path / "missing.json")


def test_trace_is_bounded_and_says_what_it_dropped():
    with raftkv.LocalCluster(n=3, storage="memory", trace_events_max=50) as cluster:
        cluster.wait_leader()
        clerk = cluster.clerk()
        for i in range(20):
            clerk.put("k", str(i))
        trace = cluster.trace()
    # 50 frequent events (messages, appends, ...) and at most 12 rare ones (roles, votes, ...)
    assert 50 <= len(trace) <= 62 and trace.dropped > 0 and trace.events_max == 50


def test_untraced_cluster_has_an_empty_trace_and_no_leader_watch():
    with raftkv.LocalCluster(n=1, storage="memory", trace_events_max=0) as cluster:
        cluster.wait_leader()
        assert len(cluster.trace()) == 0
        with pytest.raises(raftkv.ClusterError, match="trace_events_max=0"):
            cluster.on_leader_change(lambda *_: None)
    with pytest.raises(ValueError, match="trace_events_max"):
        raftkv.LocalCluster(n=1, storage="memory", trace_events_max=10**9)


def test_on_leader_change_reports_each_new_leader_from_a_background_thread():
    changes: list[tuple[int | None, int]] = []
    threads: set[str] = set()
    lock = threading.Condition()

    def callback(index: int | None, term: int) -> None:
        with lock:
            changes.append((index, term))
            threads.add(threading.current_thread().name)
            lock.notify_all()

    def wait_for(pred, what: str) -> None:
        with lock:
            assert lock.wait_for(lambda: pred(changes), timeout=15.0), f"{what}: {changes}"

    with raftkv.LocalCluster(n=3, storage="memory") as cluster:
        cluster.on_leader_change(callback)
        wait_for(lambda cs: any(i is not None for i, _ in cs), "a first leader")
        first = cluster.wait_leader()
        with lock:
            first_term = max(t for i, t in changes if i == first)
        cluster.crash(first)
        wait_for(
            lambda cs: cs[-1][0] not in (None, first) and cs[-1][1] > first_term,
            "a new leader in a later term",
        )
        new, term = changes[-1]
        assert cluster.status(new)["role"] == "leader" and cluster.status(new)["term"] == term
        assert (None, first_term) in changes, "the crash left the cluster without a leader"
    assert threading.current_thread().name not in threads
    with (
        raftkv.LocalCluster(n=1, storage="memory") as cluster,
        pytest.raises(TypeError, match="callable"),
    ):
        cluster.on_leader_change(42)  # type: ignore[arg-type]
