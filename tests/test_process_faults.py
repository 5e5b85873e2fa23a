"""Real ``raftkv serve`` processes under faults (issue 21): kill -9 of the leader, SIGSTOP of the
leader, kill -9 of the whole cluster, a deleted and a corrupted WAL file, a full disk, and a
flood of idle client connections, each under a concurrent workload.

Every test runs a three-process cluster (:class:`raftkv.procs.ProcessCluster`) with two kinds of
clients at once, sharing one History:

- :class:`conftest.Workload`: random gets, puts, appends, conditional puts and deletes on a few
  keys, so the history is worth checking for linearizability;
- :class:`AckedWrites`: writers putting keys of their own, each once, remembering every write
  acknowledged to them.

At the end every acknowledged write is read back (durability) and the whole history must be
linearizable. The short form (CI) does each crash and pause twice, about 20-30 s in all; set
``RAFTKV_FAULT_LONG=1`` for the long form (ten rounds, longer runs between faults). The pause
and whole-cluster tests run the nodes on smol, the others on tokio. The full disk test mounts a
small tmpfs: it needs root, as CI has, and fails rather than skips without it.
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import socket
import threading
import time
from pathlib import Path

import pytest
from conftest import WAIT, Workload, assert_linearizable, fill, small_disk, wait_until

import raftkv
from raftkv.procs import ProcessCluster, free_ports

#: the long form: RAFTKV_FAULT_LONG=1
LONG = os.environ.get("RAFTKV_FAULT_LONG") == "1"
#: times each fault is repeated
ROUNDS = 10 if LONG else 2
#: completed operations to wait for between faults
PROGRESS = 500 if LONG else 50
#: a start or an election after a fault may take this long on a loaded 2-core machine
START_WAIT = 30.0
#: a node that must refuse to start does so within this (interpreter start included)
REFUSE_WAIT = 20.0

pytestmark = pytest.mark.slow


class AckedWrites:
    """``writers`` threads, each putting keys of its own (``a{w}-{n}``) once, one after the
    other. ``acked`` maps every key whose put was acknowledged to its value; a put with an
    unknown outcome (Timeout, MaybeApplied) is not in it (it may or may not have happened)."""

    def __init__(self, addrs: list[str], history: raftkv.History, writers: int = 2):
        self.addrs = addrs
        self.history = history
        self.acked: dict[str, str] = {}
        self.errors: list[str] = []
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.threads = [
            threading.Thread(target=self._run, args=(w,), name=f"writer-{w}", daemon=True)
            for w in range(writers)
        ]

    def __enter__(self) -> AckedWrites:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.stop_event.set()
        for t in self.threads:
            t.join(30)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"writer threads still blocked 30 s after stop: {alive}"

    def _run(self, w: int) -> None:
        clerk = raftkv.Clerk(self.addrs, timeout=3.0, history=self.history)
        n = 0
        while not self.stop_event.is_set():
            n += 1
            key, value = f"a{w}-{n}", f"acked-{w}-{n}"
            try:
                clerk.put(key, value)
            except (raftkv.Timeout, raftkv.MaybeApplied):
                continue
            except raftkv.Error as e:
                with self.lock:
                    self.errors.append(f"writer {w}: {type(e).__name__}: {e}")
                time.sleep(0.05)
                continue
            with self.lock:
                self.acked[key] = value
            time.sleep(0.005)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def check_all_readable(self, clerk: raftkv.Clerk) -> None:
        """Reads every acknowledged key back: each must hold the value written (version 1)."""
        with self.lock:
            acked = dict(self.acked)
        assert acked, "no write was acknowledged"
        lost = []
        for key, value in acked.items():
            try:
                got = clerk.get(key)
            except raftkv.KeyNotFound:
                lost.append(f"{key}: gone")
                continue
            if got != (value.encode(), 1):
                lost.append(f"{key}: {got!r}, acknowledged {value!r} at version 1")
        assert not lost, f"{len(lost)} of {len(acked)} acknowledged writes lost: {lost[:10]}"
        assert not self.errors, "\n".join(self.errors[:10])


class Faulted:
    """A started process cluster with both workloads running (see :func:`faulted`)."""

    def __init__(self, cluster: ProcessCluster, workload: Workload, acked: AckedWrites):
        self.cluster = cluster
        self.workload = workload
        self.acked = acked

    def progress(self, what: str) -> None:
        """Waits for the workload to complete more operations, and for more acknowledged
        writes: the cluster serves."""
        before = self.acked.count()
        self.workload.wait_progress(PROGRESS, timeout=START_WAIT, what=what)
        wait_until(
            lambda: self.acked.count() > before,
            timeout=START_WAIT,
            what=f"an acknowledged write {what}",
            detail=self.describe,
        )

    def wait_caught_up(self, i: int) -> None:
        """Waits until node ``i`` has applied what the leader had committed when this began."""
        leader = self.cluster.wait_leader(timeout=START_WAIT)
        target = self.cluster.status(leader)["commit_index"]
        wait_until(
            lambda: self.cluster.status(i)["applied_index"] >= target,
            timeout=START_WAIT,
            what=f"node {i} to apply up to {target}",
            detail=self.describe,
        )

    def describe(self) -> str:
        rows = []
        for i in range(len(self.cluster.addrs)):
            try:
                rows.append(f"node {i}: {self.cluster.status(i)}")
            except (raftkv.Error, OSError) as e:
                rows.append(f"node {i}: {type(e).__name__}: {e}")
        return "\n".join(rows)


@contextlib.contextmanager
def faulted(tmp_path: Path, seed: int, before_start=None, runtime: str = "tokio"):
    """A three-process cluster (on ``runtime``) under both workloads. On leaving, the
    workloads stop, every acknowledged write is read back from the nodes still running, and the
    history must be linearizable. On failure the nodes' logs are printed (pytest shows them)."""
    history = raftkv.History()
    data = tmp_path / "data"
    data.mkdir()
    if before_start is not None:
        before_start(data)
    with ProcessCluster(3, data_dir=data, runtime=runtime) as cluster:
        try:
            cluster.wait_leader(timeout=START_WAIT)
            workload = Workload(
                cluster.addrs, history, clients=3, keys=4, timeout=[1.5, 4.0], seed=seed
            )
            with workload, AckedWrites(cluster.addrs, history) as acked:
                f = Faulted(cluster, workload, acked)
                f.progress("before the faults")
                yield f
                f.progress("after the faults")
            workload.assert_no_errors()
            reader = cluster.clerk(history=history, timeout=WAIT)
            acked.check_all_readable(reader)
            print(f"{acked.count()} acknowledged writes read back; {workload.summary()}")
        except BaseException:
            for i in range(3):
                print(f"---- node {i} log (last 3000 chars) ----\n{cluster.log(i)[-3000:]}")
            raise
    assert_linearizable(history, tmp_path)


def a_follower(cluster: ProcessCluster) -> int:
    leader = cluster.wait_leader(timeout=START_WAIT)
    return (leader + 1) % 3


# --------------------------------------------------------------------------------------------
# the process cluster itself
# --------------------------------------------------------------------------------------------


def test_a_process_cluster_has_the_process_faults_and_says_which_it_has_not(tmp_path):
    with pytest.raises(ValueError, match="n must be"):
        ProcessCluster(0, data_dir=tmp_path / "none")
    with pytest.raises(ValueError, match="runtime"):
        ProcessCluster(1, data_dir=tmp_path / "none", runtime="trio")
    with ProcessCluster(1, data_dir=tmp_path / "one", runtime="smol") as cluster:
        assert cluster.wait_leader(timeout=START_WAIT) == 0
        assert cluster.status(0)["role"] == "leader"
        with pytest.raises(raftkv.ClusterError, match="is running"):
            cluster.restart(0)
        with pytest.raises(IndexError):
            cluster.crash(1)
        network_faults = [
            lambda: cluster.partition([0]),
            lambda: cluster.isolate(0),
            cluster.heal,
            cluster.set_unreliable,
            lambda: cluster.block(0, 0),
        ]
        for fault in network_faults:
            with pytest.raises(NotImplementedError, match="LocalCluster"):
                fault()
        cluster.pause(0)
        assert cluster.is_paused(0)
        with pytest.raises(raftkv.ClusterError, match="paused"):
            cluster.status(0)
        cluster.resume(0)
        assert not cluster.is_paused(0)
        cluster.clerk(timeout=WAIT).put("k", "v")
        assert cluster.stop(0) == 0
        assert not cluster.is_running(0)
        with pytest.raises(raftkv.ClusterError, match="not running"):
            cluster.crash(0)
        cluster.restart(0)
        cluster.wait_leader(timeout=START_WAIT)
        assert cluster.clerk(timeout=WAIT).get("k") == (b"v", 1)
        assert "stopped" in cluster.log(0)


# --------------------------------------------------------------------------------------------
# crashes and pauses
# --------------------------------------------------------------------------------------------


def test_kill_9_of_the_leader_then_restart(tmp_path):
    with faulted(tmp_path, seed=1) as f:
        for rnd in range(ROUNDS):
            leader = f.cluster.wait_leader(timeout=START_WAIT)
            f.cluster.crash(leader)
            f.progress(f"with the old leader {leader} killed (round {rnd})")
            f.cluster.restart(leader)
            f.wait_caught_up(leader)


def test_sigstop_of_the_leader_then_sigcont(tmp_path):
    with faulted(tmp_path, seed=2, runtime="smol") as f:
        for rnd in range(ROUNDS):
            leader = f.cluster.wait_leader(timeout=START_WAIT)
            f.cluster.pause(leader)
            # The others elect a leader among themselves and serve while it is stopped.
            f.progress(f"with the leader {leader} stopped (round {rnd})")
            assert f.cluster.wait_leader(timeout=START_WAIT) != leader
            f.cluster.resume(leader)
            f.wait_caught_up(leader)


def test_kill_9_of_the_whole_cluster_then_restart(tmp_path):
    with faulted(tmp_path, seed=3, runtime="smol") as f:
        for rnd in range(ROUNDS):
            for i in random.Random(rnd).sample(range(3), 3):
                f.cluster.crash(i)
            for i in random.Random(rnd + 100).sample(range(3), 3):
                f.cluster.restart(i)
            f.cluster.wait_leader(timeout=START_WAIT)
            f.progress(f"after the whole cluster was killed and restarted (round {rnd})")


# --------------------------------------------------------------------------------------------
# damaged storage: the node refuses to start, with a message saying what and where (item 3)
# --------------------------------------------------------------------------------------------


def wal_segments(node_dir: str) -> list[Path]:
    segments = sorted(Path(node_dir).glob("wal-*.log"))
    assert segments, f"no WAL segment in {node_dir}: {sorted(os.listdir(node_dir))}"
    return segments


def refused_start(f: Faulted, i: int) -> str:
    """Restarts node ``i``, which must exit 3 (could not start) promptly; returns its log."""
    f.cluster.restart(i)
    code = f.cluster.wait_exit(i, timeout=REFUSE_WAIT)
    log = f.cluster.log(i)
    assert code == 3, f"exit code {code}:\n{log[-3000:]}"
    return log


def test_a_node_whose_newest_wal_segment_was_deleted_refuses_to_start(tmp_path):
    with faulted(tmp_path, seed=4) as f:
        i = a_follower(f.cluster)
        f.progress("before the kill")
        f.cluster.crash(i)
        newest = wal_segments(f.cluster.node_dir(i))[-1]
        newest.unlink()
        log = refused_start(f, i)
        assert "missing WAL data" in log, log[-3000:]
        assert "wipe this node's data directory" in log, log[-3000:]
        # The other two serve on.
        f.progress(f"with node {i} refusing to start")


def test_a_node_whose_wal_has_a_corrupted_byte_refuses_to_start(tmp_path):
    with faulted(tmp_path, seed=5) as f:
        i = a_follower(f.cluster)
        f.progress("before the kill")
        f.cluster.crash(i)
        segment = wal_segments(f.cluster.node_dir(i))[-1]
        data = bytearray(segment.read_bytes())
        # The records are at the start of the (preallocated, zero-filled) segment: flip one
        # bit in the middle of them, so that acknowledged records follow the damage.
        written = len(data.rstrip(b"\0"))
        assert written > 1000, f"only {written} bytes of records in {segment}"
        data[written // 2] ^= 0x10
        segment.write_bytes(bytes(data))
        log = refused_start(f, i)
        assert "storage corruption" in log, log[-3000:]
        assert segment.name in log, log[-3000:]
        # Item 6: from Python, the single node's start raises ClusterError saying what is
        # damaged, where, and what to do.
        peer, client = free_ports(2)
        node = raftkv.Node(
            id=i + 1,
            peers={i + 1: f"127.0.0.1:{peer}"},
            client_addrs={i + 1: f"127.0.0.1:{client}"},
            data_dir=f.cluster.node_dir(i),
        )
        with pytest.raises(raftkv.ClusterError) as refused:
            node.start()
        text = str(refused.value)
        assert segment.name in text and "CRC mismatch" in text, text
        assert "wipe its data directory" in text, text
        f.progress(f"with node {i} refusing to start")


# --------------------------------------------------------------------------------------------
# a full disk (items 1 and 5): the node exits 1 saying why, restarts once there is room
# --------------------------------------------------------------------------------------------


def test_a_node_whose_disk_fills_up_exits_1_and_catches_up_once_there_is_room(tmp_path):
    disk: dict[str, Path] = {}
    with contextlib.ExitStack() as stack:

        def mount_node2(data: Path) -> None:
            # Node index 1 (node2/) keeps its data on a 40 MiB disk of its own.
            disk["path"] = stack.enter_context(small_disk(data / "node2", 40))

        with faulted(tmp_path, seed=6, before_start=mount_node2) as f:
            f.progress("before the disk fills")
            fill(disk["path"])
            # Large values use up the WAL segment's preallocated room, then the node needs
            # more it cannot have.
            big = f.cluster.clerk(timeout=3.0)
            value = b"v" * 32_768
            deadline = time.monotonic() + 90
            n = 0
            while f.cluster.is_running(1) and time.monotonic() < deadline:
                n += 1
                with contextlib.suppress(raftkv.Error):
                    big.put(f"big{n % 50}", value)
            code = f.cluster.wait_exit(1, timeout=10)
            log = f.cluster.log(1)
            assert code == 1, f"exit code {code}:\n{log[-3000:]}"
            assert "fail-stop" in log and "No space left on device" in log, log[-3000:]
            f.progress("with node 1 stopped by its full disk")
            for name in ("filler", "filler-small"):
                (disk["path"] / name).unlink(missing_ok=True)
            f.cluster.restart(1)
            f.wait_caught_up(1)


# --------------------------------------------------------------------------------------------
# a flood of idle connections (item 4)
# --------------------------------------------------------------------------------------------

IDLE_CONNECTIONS = 2_000


def raise_fd_limit(wanted: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    assert soft >= wanted, f"the test needs {wanted} open files, the hard limit is {hard}"


def test_a_new_clerk_works_while_2000_idle_connections_are_held(tmp_path):
    # Before the servers start: they inherit the limit (their cap, 1,024, is what must bite).
    raise_fd_limit(IDLE_CONNECTIONS + 1_024)
    held: list[socket.socket] = []
    try:
        with faulted(tmp_path, seed=7) as f:
            leader = f.cluster.wait_leader(timeout=START_WAIT)
            host, port = f.cluster.addrs[leader].rsplit(":", 1)
            for _ in range(IDLE_CONNECTIONS):
                held.append(socket.create_connection((host, int(port)), timeout=5))
            started = time.monotonic()
            late = f.cluster.clerk(timeout=5.0)
            assert late.put("late", "1") == 1
            assert late.get("late") == (b"1", 1)
            took = time.monotonic() - started
            assert took < 5.0, f"a new Clerk took {took:.1f} s with the connections held"
            f.progress(f"with {IDLE_CONNECTIONS} idle connections held")
            log = f.cluster.log(leader)
            assert "connections_max reached" in log, log[-3000:]
    finally:
        for s in held:
            s.close()
