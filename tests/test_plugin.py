"""The pytest plugin installed with the package: fixtures ``raftkv_cluster`` and
``raftkv_history`` (registered through the ``pytest11`` entry point, not by this conftest)."""

from __future__ import annotations

import raftkv


def test_plugin_fixtures(raftkv_cluster, raftkv_history):
    assert isinstance(raftkv_history, raftkv.History)
    assert len(raftkv_history) == 0
    raftkv_cluster.wait_leader(timeout=10.0)
    assert len(raftkv_cluster.addrs) >= 1
    clerk = raftkv_cluster.clerk(history=raftkv_history)
    assert clerk.put("plugin", "works") == 1
    assert clerk.get("plugin") == (b"works", 1)
    assert clerk.append("plugin", "!") == 2
    assert len(raftkv_history) == 3
    assert raftkv.check_linearizable(raftkv_history).ok is True


def test_plugin_history_is_fresh_per_test(raftkv_history):
    assert len(raftkv_history) == 0
