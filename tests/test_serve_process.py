"""How a ``raftkv serve`` process behaves (issue 21 items 1, 2 and 5; issue 18 "Logs"): its log
on stderr, prompt stops on SIGTERM/SIGINT in every state, a start that fails at once, a node
whose storage fails exiting non-zero with the cause, and the Rust log reaching Python's
``logging`` in library use.

Every process is bounded in time (``communicate``/``wait`` with a timeout) and killed at the end
of its test whatever happens. The full-disk tests mount a small tmpfs (they need root, as in CI;
without it they fail rather than skip).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from conftest import WAIT, fill, fill_leaving, raftkv_cli, small_disk, wait_until

import raftkv
from raftkv.procs import free_ports

#: a requested stop or a failure must end the process within this many seconds
PROMPT_S = 5.0


class Serve:
    """One ``raftkv serve`` process (a single-node cluster unless ``peers`` says otherwise),
    its stderr collected line by line by a thread."""

    def __init__(self, *extra: str, data_dir: Path | None = None, env: dict | None = None):
        self.peer, self.client = free_ports(2)
        argv = raftkv_cli() + [
            "serve",
            "--id",
            "1",
            "--peers",
            f"1=127.0.0.1:{self.peer}",
            "--client-addrs",
            f"1=127.0.0.1:{self.client}",
        ]
        argv += ["--data-dir", str(data_dir)] if data_dir else ["--storage", "memory"]
        self.lines: list[str] = []
        self.proc = subprocess.Popen(
            argv + list(extra),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def stderr(self) -> str:
        return "\n".join(self.lines)

    def wait_for(self, text: str, timeout: float = WAIT) -> None:
        wait_until(
            lambda: any(text in line for line in self.lines) or self.proc.poll() is not None,
            timeout=timeout,
            what=f"{text!r} on stderr",
            detail=lambda: self.stderr,
        )
        assert any(text in line for line in self.lines), (
            f"the process ended ({self.proc.returncode}) without printing {text!r}:\n{self.stderr}"
        )

    def exit_code(self, timeout: float = PROMPT_S) -> int:
        """Waits for the process to end (failing the test after ``timeout`` s)."""
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"raftkv serve still running after {timeout} s:\n{self.stderr}")
        self._reader.join(timeout=2)
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self._reader.join(timeout=2)


@contextlib.contextmanager
def serve(*extra: str, **kwargs):
    s = Serve(*extra, **kwargs)
    try:
        yield s
    finally:
        s.kill()


def handles_sigterm(pid: int) -> bool:
    """Whether the process has installed a SIGTERM handler (``SigCgt`` in /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signal.SIGTERM - 1)))
    return False


# --------------------------------------------------------------------------------------------
# logs (issue 18)
# --------------------------------------------------------------------------------------------


def test_serve_logs_its_storage_recovery_and_leader_election_on_stderr(tmp_path):
    with serve(data_dir=tmp_path / "n1") as s:
        s.wait_for("n1 is the leader")
        assert any("recovered its log" in line for line in s.lines), s.stderr
        s.proc.send_signal(signal.SIGTERM)
        assert s.exit_code() == 0, s.stderr


def test_serve_log_format_json_writes_one_json_object_per_line():
    with serve("--log-format", "json") as s:
        s.wait_for("is the leader")
        s.proc.send_signal(signal.SIGTERM)
        assert s.exit_code() == 0, s.stderr
    events = [json.loads(line) for line in s.lines if line.startswith("{")]
    assert any(
        e["level"] == "INFO" and "n1 is the leader" in e["fields"]["message"] for e in events
    ), s.stderr


def test_raftkv_log_filters_the_serve_log():
    with serve(env={"RAFTKV_LOG": "warn"}) as s:
        s.wait_for("serving")
        clerk_put(s)
        s.proc.send_signal(signal.SIGTERM)
        assert s.exit_code() == 0, s.stderr
    assert not any("is the leader" in line for line in s.lines), s.stderr


def test_a_malformed_raftkv_log_is_a_usage_error():
    with serve(env={"RAFTKV_LOG": "raftkv=notalevel"}) as s:
        assert s.exit_code() == 2, s.stderr
    assert "RAFTKV_LOG" in s.stderr


def test_a_local_cluster_logs_through_python_logging(caplog):
    caplog.set_level(logging.INFO, logger="raftkv")
    with raftkv.LocalCluster(3, storage="memory") as cluster:
        cluster.wait_leader(timeout=WAIT)
        wait_until(
            lambda: any(r.name.startswith("raftkv.") for r in caplog.records),
            what="a raftkv log record",
        )
    record = next(r for r in caplog.records if r.name.startswith("raftkv."))
    assert record.levelno >= logging.INFO
    assert record.getMessage()


def clerk_put(s: Serve) -> None:
    raftkv.Clerk([f"127.0.0.1:{s.client}"], timeout=WAIT).put(b"k", b"v")


# --------------------------------------------------------------------------------------------
# prompt stops (issue 21 item 2)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_a_serving_node_promptly_with_exit_code_0(tmp_path, sig):
    with serve(data_dir=tmp_path / "n1") as s:
        s.wait_for("serving")
        clerk_put(s)
        s.proc.send_signal(sig)
        assert s.exit_code() == 0, s.stderr
        assert "stopped" in s.stderr


def test_sigterm_while_starting_stops_promptly_with_exit_code_0(tmp_path):
    with serve(data_dir=tmp_path / "n1") as s:
        # As soon as serve's handler is in place: before or during the node's start.
        wait_until(lambda: handles_sigterm(s.proc.pid), interval=0.002, what="SIGTERM handler")
        s.proc.send_signal(signal.SIGTERM)
        assert s.exit_code() == 0, s.stderr


def test_a_start_on_a_locked_data_dir_fails_at_once_with_exit_code_3(tmp_path):
    with serve(data_dir=tmp_path / "n1") as first:
        first.wait_for("serving")
        with serve(data_dir=tmp_path / "n1") as second:
            started = time.monotonic()
            assert second.exit_code() == 3, second.stderr
            assert time.monotonic() - started < PROMPT_S
            assert "in use" in second.stderr, second.stderr


def test_a_start_on_a_port_in_use_fails_at_once_with_exit_code_3(tmp_path):
    with serve(data_dir=tmp_path / "n1") as first:
        first.wait_for("serving")
        # Another node on the same addresses (its own data dir).
        argv = raftkv_cli() + [
            "serve",
            "--id",
            "1",
            "--peers",
            f"1=127.0.0.1:{first.peer}",
            "--client-addrs",
            f"1=127.0.0.1:{first.client}",
            "--data-dir",
            str(tmp_path / "other"),
        ]
        started = time.monotonic()
        r = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        assert r.returncode == 3, r.stderr
        assert time.monotonic() - started < PROMPT_S + 2  # includes the interpreter's start
        assert "in use" in r.stderr, r.stderr


# --------------------------------------------------------------------------------------------
# fail-stop (issue 21 item 1)
# --------------------------------------------------------------------------------------------


def test_a_node_whose_disk_fills_up_exits_1_with_the_cause_on_stderr(tmp_path):
    with small_disk(tmp_path / "disk", 40) as disk, serve(data_dir=disk / "n1") as s:
        s.wait_for("serving")
        clerk_put(s)
        fill(disk)
        clerk = raftkv.Clerk([f"127.0.0.1:{s.client}"], timeout=2.0)
        value = b"v" * 32_768
        deadline = time.monotonic() + 60
        # Until the log needs room it cannot have (its current WAL segment is full).
        while s.proc.poll() is None and time.monotonic() < deadline:
            with contextlib.suppress(raftkv.Error):
                clerk.put(b"k", value)
        code = s.exit_code(timeout=PROMPT_S)
        assert code == 1, s.stderr
        assert "fail-stop" in s.stderr, s.stderr
        assert "No space left on device" in s.stderr or "storage" in s.stderr, s.stderr


# --------------------------------------------------------------------------------------------
# recovery from a full disk (issue 21 item 5)
# --------------------------------------------------------------------------------------------


def test_a_node_restarts_on_a_nearly_full_disk_and_says_what_it_needs_on_a_full_one(tmp_path):
    with small_disk(tmp_path / "disk", 48) as disk:
        data = disk / "n1"
        with serve(data_dir=data) as s:
            s.wait_for("serving")
            clerk_put(s)
            s.proc.send_signal(signal.SIGTERM)
            assert s.exit_code() == 0, s.stderr
        # 2 MiB free: not a whole 16 MiB WAL segment, but room to start and serve.
        fill_leaving(disk, 2 << 20)
        with serve(data_dir=data) as s:
            s.wait_for("is the leader")
            assert raftkv.Clerk([f"127.0.0.1:{s.client}"], timeout=WAIT).get(b"k")[0] == b"v"
            # The WAL resumed beside its old segment in a short one (1 MiB, not 16).
            segments = sorted(data.glob("wal-*.log"))
            assert segments and segments[-1].stat().st_size <= 1 << 20, [
                (p.name, p.stat().st_size) for p in segments
            ]
            s.proc.send_signal(signal.SIGTERM)
            assert s.exit_code() == 0, s.stderr
        fill(disk)
        with serve(data_dir=data) as s:
            assert s.exit_code() == 3, s.stderr
        assert "no space left" in s.stderr and "bytes free" in s.stderr, s.stderr


def test_node_failure_says_why_a_node_stopped_itself(tmp_path):
    """raftkv.Node in this process: `failure` is None while it runs, the storage error once
    a full disk stopped it, and None again after stop()."""
    peer, client = free_ports(2)
    with small_disk(tmp_path / "disk", 40) as disk:
        node = raftkv.Node(
            id=1,
            peers={1: f"127.0.0.1:{peer}"},
            client_addrs={1: f"127.0.0.1:{client}"},
            data_dir=str(disk / "n1"),
        )
        node.start()
        try:
            clerk = raftkv.Clerk([node.client_addr], timeout=2.0)
            clerk.put(b"k", b"v")
            assert node.failure is None
            fill(disk)
            deadline = time.monotonic() + 60
            while node.failure is None and time.monotonic() < deadline:
                with contextlib.suppress(raftkv.Error):
                    clerk.put(b"k", b"v" * 32_768)
            assert node.failure is not None, "the node kept running on a full disk"
            assert "No space left on device" in node.failure, node.failure
        finally:
            node.stop()
        assert node.failure is None
