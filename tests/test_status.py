"""Issue 18: ``raftkv status --endpoints ... [--json]``, a table of every node of a running
cluster (id, address, role, term, leader, commit/applied index, lag), and its exit codes."""

from __future__ import annotations

import json
import os
import subprocess

from conftest import raftkv_cli

import raftkv


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    env.pop("RAFTKV_ENDPOINTS", None)
    return subprocess.run(
        raftkv_cli() + args,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def test_status_lists_every_node_with_one_leader():
    with raftkv.LocalCluster(n=3, storage="memory") as cluster:
        leader = cluster.wait_leader()
        clerk = cluster.clerk()
        for i in range(5):
            clerk.put(f"k{i}", "v")
        # One endpoint is enough: the others come from the member list.
        proc = run(["status", "--endpoints", cluster.addrs[0], "--json"])
        assert proc.returncode == 0, proc.stderr
        rows = json.loads(proc.stdout)
        assert [r["id"] for r in rows] == [1, 2, 3]
        assert sorted(r["address"] for r in rows) == sorted(cluster.addrs)
        leaders = [r for r in rows if r["role"] == "leader"]
        assert [r["id"] for r in leaders] == [leader + 1]
        assert all(r["leader"] == leader + 1 for r in rows)
        assert all(r["commit_index"] >= 6 and r["lag"] >= 0 for r in rows)
        assert len({r["term"] for r in rows}) == 1

        proc = run(["status", "--endpoints", ",".join(cluster.addrs)])
        assert proc.returncode == 0, proc.stderr
        lines = proc.stdout.strip().splitlines()
        assert lines[0].split() == [
            "ID",
            "ADDRESS",
            "ROLE",
            "TERM",
            "LEADER",
            "COMMIT",
            "APPLIED",
            "LAG",
        ]
        assert len(lines) == 4 and sum(" leader " in line for line in lines) == 1

        down = (leader + 1) % 3
        cluster.crash(down)
        proc = run(["status", "--endpoints", ",".join(cluster.addrs), "--timeout", "1"])
        assert proc.returncode == 3, proc.stdout + proc.stderr
        assert "unreachable" in proc.stdout and cluster.addrs[down] in proc.stdout


def test_status_without_endpoints_is_a_usage_error():
    proc = run(["status"])
    assert proc.returncode == 2 and "no endpoints" in proc.stderr
    proc = run(["status", "--endpoints", "127.0.0.1:1", "--timeout", "0"])
    assert proc.returncode == 2 and "timeout" in proc.stderr
