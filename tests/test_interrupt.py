"""Ctrl-C (SIGINT) interrupts a call (Clerk get/put, wait_leader) blocked on a cluster without
a majority, within ~2 s."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

CHILD = textwrap.dedent("""
    import signal, sys, time
    import raftkv

    # A parent started in the background (nohup, `&` in a script) passes SIGINT down ignored,
    # and Python then installs no handler: restore the interactive default.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    how = sys.argv[1]
    cluster = raftkv.LocalCluster(n=3, storage="memory", runtime=sys.argv[2])
    cluster.wait_leader(timeout=10.0)
    clerk = raftkv.Clerk(cluster.addrs, timeout=120.0)
    clerk.put(b"k", b"v")
    if how == "crash-all":
        for i in range(3):
            cluster.crash(i)
    else:  # no two nodes can talk: no majority anywhere, every node still answers clients
        cluster.partition([0], [1], [2])
    print("READY", flush=True)
    start = time.monotonic()
    try:
        %s
    except KeyboardInterrupt:
        print(f"INTERRUPTED {time.monotonic() - start:.3f}", flush=True)
        raise
    except BaseException as e:
        print(f"UNEXPECTED {type(e).__name__}: {e}", flush=True)
        sys.exit(3)
    print("RETURNED", flush=True)
    sys.exit(4)
""")


@pytest.mark.parametrize(
    "how,runtime,call",
    [
        pytest.param("crash-all", "tokio", 'clerk.get(b"k")', id="crash-all-tokio-get"),
        pytest.param("no-majority", "smol", 'clerk.get(b"k")', id="no-majority-smol-get"),
        pytest.param("no-majority", "tokio", 'clerk.put(b"k", b"w")', id="no-majority-tokio-put"),
        pytest.param(
            "crash-all",
            "smol",
            "cluster.wait_leader(timeout=120.0)",
            id="crash-all-smol-wait_leader",
        ),
    ],
)
def test_ctrl_c_interrupts_a_blocked_call(how, runtime, call):
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD % call, how, runtime],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue = queue.Queue()

    def pump():
        for line in proc.stdout:
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    try:
        ready = None
        deadline = time.monotonic() + 60
        while ready is None and time.monotonic() < deadline:
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            if line is None:
                break
            if line == "READY":
                ready = time.monotonic()
        assert ready is not None, (
            f"the child never got ready: {proc.stderr.read() if proc.poll() is not None else ''}"
        )

        # SIGINT 1 s into the blocked call (polling, so a fast return would be noticed)
        while time.monotonic() < ready + 1.0:
            assert proc.poll() is None, "the call returned before SIGINT"
            time.sleep(0.05)
        sent = time.monotonic()
        proc.send_signal(signal.SIGINT)

        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            pytest.fail("the child did not exit within 15 s of SIGINT")
        exited = time.monotonic()
        out = []
        while True:
            try:
                line = lines.get(timeout=5)
            except queue.Empty:
                break
            if line is None:
                break
            out.append(line)
        stderr = proc.stderr.read()
        interrupted = [line for line in out if line.startswith("INTERRUPTED")]
        assert interrupted, f"no KeyboardInterrupt: stdout={out} stderr={stderr[-2000:]}"
        assert "KeyboardInterrupt" in stderr
        assert proc.returncode != 0
        # the call had been blocked for ~1 s when the signal came; it must end within ~2 s of it
        blocked = float(interrupted[0].split()[1])
        assert blocked < (sent - ready) + 2.5, (
            f"KeyboardInterrupt came {blocked - (sent - ready):.2f} s after SIGINT"
        )
        assert exited - sent < 15
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
