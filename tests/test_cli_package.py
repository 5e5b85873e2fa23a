"""The ``raftkv`` command line as a package: ``--version``, each command's module, and the
library code the demo and the bench are made of (:mod:`raftkv.faults`, :mod:`raftkv.procs`)."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest
from conftest import WAIT, local_cluster, raftkv_cli, wait_until

import raftkv
import raftkv.cli
from raftkv import faults, procs

pytestmark = pytest.mark.cli


def run(args, timeout=60, **kw):
    return subprocess.run(
        raftkv_cli() + [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **kw
    )


def test_version_is_the_installed_package_version():
    installed = importlib.metadata.version("raftkv")
    assert raftkv.__version__ == installed
    assert installed.count(".") >= 2 and installed[0].isdigit(), installed
    proc = run(["--version"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"raftkv {installed}"


def test_python_m_raftkv_and_python_m_raftkv_cli_run_the_same_command():
    for module in ("raftkv", "raftkv.cli"):
        proc = subprocess.run(
            [sys.executable, "-m", module, "--version"], capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == f"raftkv {raftkv.__version__}"


@pytest.mark.parametrize("command", ["serve", "get", "put", "delete", "check", "demo", "bench"])
def test_every_command_has_help(command):
    proc = run([command, "--help"])
    assert proc.returncode == 0, proc.stderr
    assert f"raftkv {command}" in proc.stdout


def test_no_command_is_a_usage_error():
    proc = run([])
    assert proc.returncode == 2
    assert "COMMAND" in proc.stderr and "Traceback" not in proc.stderr


def test_usage_errors_exit_2_with_one_line(monkeypatch, capsys):
    monkeypatch.delenv("RAFTKV_ENDPOINTS", raising=False)
    assert raftkv.cli.main(["get", "k"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no endpoints" in err[0], err
    assert (
        raftkv.cli.main(["serve", "--id", "4", "--peers", "1=127.0.0.1:1", "--storage", "memory"])
        == 2
    )
    assert "--id 4 is not among --peers" in capsys.readouterr().err
    assert raftkv.cli.main(["serve", "--id", "1", "--peers", "127.0.0.1:7001"]) == 2
    assert "expected ID=HOST:PORT" in capsys.readouterr().err


def test_delete_command_in_process(capsys):
    """get/put/delete through main() in this process (the subprocess tests are in test_cli)."""
    with local_cluster("memory", "tokio") as cluster:
        eps = ",".join(cluster.addrs)
        assert raftkv.cli.main(["put", "d", "v", "--endpoints", eps]) == 0
        assert capsys.readouterr().out.strip() == "1"
        assert raftkv.cli.main(["delete", "d", "--endpoints", eps]) == 0
        assert raftkv.cli.main(["delete", "d", "--endpoints", eps]) == 1
        assert "no such key: d" in capsys.readouterr().err
        assert raftkv.cli.main(["get", "d", "--endpoints", eps]) == 1


# --- raftkv.faults ------------------------------------------------------------------------------


def test_a_fault_outside_the_run_or_of_an_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="fraction"):
        faults.Fault(1.5, "heal")
    with pytest.raises(ValueError, match="unknown fault action"):
        faults.Fault(0.5, "explode")  # type: ignore[arg-type]


def test_demo_schedule_is_sorted_and_restarts_every_crash():
    times = [f.at for f in faults.DEMO_SCHEDULE]
    assert times == sorted(times)
    actions = [f.action for f in faults.DEMO_SCHEDULE]
    assert actions.count("restart") == sum(a.startswith("crash") for a in actions)


@pytest.mark.slow
def test_nemesis_applies_the_demo_schedule_and_the_cluster_recovers():
    with local_cluster("lmdb", "tokio") as cluster:
        first_leader = cluster.wait_leader(timeout=WAIT)
        nemesis = faults.Nemesis(cluster, faults.DEMO_SCHEDULE)
        assert nemesis.advance(0.05) == []  # nothing due yet
        events = nemesis.advance(0.10, 1.0)
        assert events == [f"  1.0s crash n{first_leader} (leader)"]
        assert nemesis.down == {first_leader}
        assert not cluster.is_running(first_leader)
        events = nemesis.advance(0.30, 3.0)
        assert events[0] == f"  3.0s restart n{first_leader}" and nemesis.down == set()
        assert cluster.is_running(first_leader)
        for fault in nemesis.schedule[2:]:  # one at a time, each with a leader to act on
            cluster.wait_leader(timeout=WAIT)
            assert len(nemesis.advance(fault.at, fault.at * 10)) == 1, nemesis.events
        assert nemesis.done
        assert [e.split()[1] for e in nemesis.events] == [
            "crash",
            "restart",
            "partition",
            "heal",
            "isolate",
            "heal",
            "crash",
            "restart",
        ]
        assert nemesis.down == set()
        nemesis.heal()
        clerk = cluster.clerk(timeout=WAIT)
        assert clerk.put("after", "faults") >= 1
        wait_until(
            lambda: all(
                cluster.status(i)["role"] in ("leader", "follower") for i in range(len(cluster))
            ),
            what="every node back",
        )


# --- raftkv.procs -------------------------------------------------------------------------------


def test_free_ports_are_distinct_and_bindable():
    import socket

    ports = procs.free_ports(4)
    assert len(set(ports)) == 4
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


@pytest.mark.slow
def test_start_servers_serves_and_stop_servers_ends_every_process(tmp_path):
    servers, endpoints = procs.start_servers(3, tmp_path, workers=1)
    try:
        assert len(servers) == 3 and len(endpoints) == 3
        procs.wait_serving(endpoints, servers, timeout=60.0, log_dir=tmp_path)
        clerk = raftkv.Clerk(endpoints, timeout=WAIT)
        assert clerk.get("ready") == (b"1", 1)
        assert all((tmp_path / f"node{i}.log").is_file() for i in (1, 2, 3))
        assert all((tmp_path / f"node{i}").is_dir() for i in (1, 2, 3))
    finally:
        procs.stop_servers(servers)
    assert all(p.poll() is not None for p in servers)


def test_start_servers_passes_extra_args_to_every_node(tmp_path):
    """benchmarks/memory.py --raftkv-args (issue 20): the flags reach `raftkv serve`; here a
    data bound of 4,000 bytes refuses a 5,000-byte value on the one node."""
    servers, endpoints = procs.start_servers(
        1, tmp_path, workers=1, extra_args=["--data-bytes-max", "4000"]
    )
    try:
        assert servers[0].args[-2:] == ["--data-bytes-max", "4000"]
        procs.wait_serving(endpoints, servers, timeout=60.0, log_dir=tmp_path)
        clerk = raftkv.Clerk(endpoints, timeout=WAIT)
        with pytest.raises(raftkv.StoreFull):
            clerk.put("big", b"x" * 5000)
        clerk.put("small", b"x" * 100)
    finally:
        procs.stop_servers(servers)


def test_wait_serving_names_the_node_that_exited(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    port = procs.free_ports(1)[0]
    with pytest.raises(raftkv.ClusterError, match=r"node\(s\) 1 exited .*" + str(tmp_path)):
        procs.wait_serving([f"127.0.0.1:{port}"], [dead], timeout=30.0, log_dir=tmp_path)


def test_wait_serving_gives_up_after_its_timeout():
    port = procs.free_ports(1)[0]
    with pytest.raises(raftkv.Error):
        procs.wait_serving([f"127.0.0.1:{port}"], timeout=0.5)


def test_the_old_private_names_still_work():
    """Scripts written against the one-file cli imported these."""
    assert raftkv.cli._free_ports is procs.free_ports
    assert raftkv.cli._start_servers is procs.start_servers
    assert raftkv.cli._stop_servers is procs.stop_servers
    assert os.path.basename(raftkv.cli.__file__) == "__init__.py"
