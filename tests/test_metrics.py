"""Issue 18: Prometheus metrics — ``LocalCluster.metrics(i)``, ``Node.metrics()`` and
``raftkv serve --metrics-addr`` (scraped over HTTP while a client writes; the scrape time is
printed)."""

from __future__ import annotations

import re
import threading
import time
import urllib.request

import pytest
from test_serve_process import serve

import raftkv
from raftkv.procs import free_ports


def value(text: str, name: str) -> float:
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert m, f"no {name} in\n{text}"
    return float(m.group(1))


def test_cluster_metrics_show_each_nodes_role_and_progress():
    with raftkv.LocalCluster(n=3, storage="memory") as cluster:
        leader = cluster.wait_leader()
        clerk = cluster.clerk()
        for i in range(10):
            clerk.put(f"k{i}", "v")
        text = cluster.metrics(leader)
        assert value(text, "raftkv_role") == 3 and value(text, "raftkv_leader_id") == leader + 1
        assert value(text, "raftkv_commit_index") >= 11
        assert value(text, "raftkv_entries_applied_total") >= 11
        assert 'raftkv_messages_sent_total{kind="append"}' in text
        # client requests by kind and result, and the disk's write latency
        assert value(text, 'raftkv_client_requests_total{op="put",result="ok"}') >= 10
        assert value(text, 'raftkv_client_request_seconds_count{op="put"}') >= 10
        with pytest.raises(raftkv.KeyNotFound):
            clerk.get("missing")
        after = cluster.metrics(cluster.wait_leader())
        assert value(after, 'raftkv_client_requests_total{op="get",result="no_key"}') >= 1
        assert value(text, "raftkv_storage_write_seconds_count") >= 1
        assert value(text, "raftkv_storage_write_ops_sum") >= 11
        follower = (leader + 1) % 3
        assert value(cluster.metrics(follower), "raftkv_role") == 0
        assert text.rstrip().endswith("# EOF")
        with pytest.raises(IndexError):
            cluster.metrics(5)


def test_serve_metrics_addr_serves_the_metrics_under_load(tmp_path):
    (port,) = free_ports(1)
    url = f"http://127.0.0.1:{port}/metrics"
    with serve("--metrics-addr", f"127.0.0.1:{port}") as s:
        s.wait_for(f"metrics at http://127.0.0.1:{port}/metrics")
        s.wait_for("serving")
        clerk = raftkv.Clerk([f"127.0.0.1:{s.client}"], timeout=10.0)
        stop = threading.Event()
        writes = [0]

        def write() -> None:
            while not stop.is_set():
                clerk.put(f"k{writes[0] % 50}", "v" * 100)
                writes[0] += 1

        writer = threading.Thread(target=write, daemon=True)
        writer.start()
        try:
            deadline = time.monotonic() + 30
            while writes[0] < 100 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert writes[0] >= 100, "the writer is under way before the scrapes"
            before = writes[0]
            times = []
            for _ in range(20):
                started = time.monotonic()
                with urllib.request.urlopen(url, timeout=10) as r:
                    body = r.read().decode()
                    assert r.status == 200
                    assert r.headers["Content-Type"].startswith("application/openmetrics-text")
                times.append(time.monotonic() - started)
        finally:
            stop.set()
            writer.join(timeout=10)
        times.sort()
        print(
            f"\nmetrics scrape under load ({writes[0] - before} puts meanwhile): median "
            f"{times[len(times) // 2] * 1000:.1f} ms, max {times[-1] * 1000:.1f} ms"
        )
        assert value(body, "raftkv_role") == 3, "a cluster of one leads"
        assert value(body, "raftkv_applied_index") >= 1
        assert value(body, 'raftkv_client_requests_total{op="put",result="ok"}') >= 100
        assert value(body, "raftkv_storage_write_seconds_count") >= 1
        assert times[len(times) // 2] < 1.0
        with pytest.raises(urllib.error.HTTPError):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/other", timeout=10)


def test_serve_refuses_a_bad_metrics_addr():
    with serve("--metrics-addr", "no-port") as s:
        assert s.exit_code(timeout=30) == 3
        assert "cannot serve metrics" in s.stderr


def test_node_metrics():
    peer, client = free_ports(2)
    with raftkv.Node(
        id=1,
        peers={1: f"127.0.0.1:{peer}"},
        storage="memory",
        client_addrs={1: f"127.0.0.1:{client}"},
    ) as node:  # started by `with`
        raftkv.Clerk([node.client_addr], timeout=10.0).put("k", "v")
        text = node.metrics()
        assert value(text, "raftkv_term") >= 1 and value(text, "raftkv_commit_index") >= 2
