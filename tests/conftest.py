"""Shared helpers for raftkv's Python test suite.

Everything here is written against the public Python interface only (``docs/api.md``).
Time bounds are generous (a loaded 2-core CI machine): waits poll a condition for up to
10 s instead of sleeping and then asserting.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import random
import shutil
import subprocess
import sys
import threading
import time

import pytest

import raftkv

# --------------------------------------------------------------------------------------------
# combinations
# --------------------------------------------------------------------------------------------

STORAGES = ("memory", "lmdb")
RUNTIMES = ("tokio", "smol")

#: every (storage, runtime) combination, for the cheap tests
ALL_COMBOS = [pytest.param(s, r, id=f"{s}-{r}") for s in STORAGES for r in RUNTIMES]
#: the same, as the params of a fixture (one value each: the pair)
ALL_COMBOS_FIXTURE = [pytest.param((s, r), id=f"{s}-{r}") for s in STORAGES for r in RUNTIMES]


def combos(*pairs):
    """pytest params for a subset of (storage, runtime) pairs (the heavy scenarios)."""
    return [pytest.param(s, r, id=f"{s}-{r}") for s, r in pairs]


#: waits on a condition (leader, catch-up, progress) give up after this long
WAIT = 10.0


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test (seconds to tens of seconds)")
    config.addinivalue_line("markers", "cli: runs the raftkv command line in a subprocess")


# --------------------------------------------------------------------------------------------
# shipped Porcupine / Jepsen data
# --------------------------------------------------------------------------------------------

#: ``shared/`` sits beside the checkout: /work/main/../shared
PORCUPINE_DIR = pathlib.Path(__file__).resolve().parents[1].parent / "shared" / "data" / "porcupine"


def read_verdicts(sub: str) -> list[tuple[pathlib.Path, bool]]:
    """(file, linearizable?) for every line of ``PORCUPINE_DIR/sub/VERDICTS.txt``."""
    path = PORCUPINE_DIR / sub / "VERDICTS.txt"
    out = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) != 2:
            continue
        name, verdict = parts
        assert verdict in ("linearizable", "not-linearizable"), line
        out.append((PORCUPINE_DIR / sub / name, verdict == "linearizable"))
    return out


def skip_without_porcupine():
    if not PORCUPINE_DIR.is_dir():
        pytest.skip(
            f"the shipped Porcupine data is not at {PORCUPINE_DIR} "
            "(expected shared/ beside the checkout)"
        )


# --------------------------------------------------------------------------------------------
# the command line
# --------------------------------------------------------------------------------------------


def raftkv_cli() -> list[str]:
    """The argv prefix that runs the ``raftkv`` command of *this* interpreter's install."""
    bindir = pathlib.Path(sys.executable).parent
    for name in ("raftkv", "raftkv.exe"):
        candidate = bindir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return [str(candidate)]
    found = shutil.which("raftkv")
    if found:
        return [found]
    return [sys.executable, "-m", "raftkv.cli"]


# --------------------------------------------------------------------------------------------
# waiting
# --------------------------------------------------------------------------------------------


def wait_until(
    predicate, timeout: float = WAIT, interval: float = 0.05, what: str = "condition", detail=None
):
    """Polls ``predicate`` until it returns a truthy value, which is returned; fails the test
    after ``timeout`` seconds. Exceptions from the predicate count as "not yet"; the last one
    is shown on failure, with ``detail()`` (e.g. the nodes' statuses) when given."""
    deadline = time.monotonic() + timeout
    last_exc = None
    while True:
        try:
            value = predicate()
            if value:
                return value
        except Exception as e:
            last_exc = e
        if time.monotonic() >= deadline:
            extra = f" (last error: {last_exc!r})" if last_exc is not None else ""
            if detail is not None:
                try:
                    extra += f"\n{detail()}"
                except Exception as e:
                    extra += f"\n(detail failed: {e!r})"
            pytest.fail(f"timed out after {timeout} s waiting for {what}{extra}")
        time.sleep(interval)


def statuses(cluster, nodes=None) -> dict[int, dict]:
    nodes = range(len(cluster.addrs)) if nodes is None else nodes
    return {i: cluster.status(i) for i in nodes}


def describe_cluster(cluster) -> str:
    """Every node's status, one a line (a crashed node shows its error)."""
    lines = []
    for i in range(len(cluster.addrs)):
        try:
            lines.append(f"  node {i}: {cluster.status(i)}")
        except Exception as e:
            lines.append(f"  node {i}: {type(e).__name__}: {e}")
    return "\n".join(lines)


def wait_caught_up(cluster, nodes=None, timeout: float = WAIT, target: int | None = None):
    """Waits until every node in ``nodes`` has applied at least ``target`` (default: the
    current leader's commit index, re-read on every poll)."""
    nodes = list(range(len(cluster.addrs)) if nodes is None else nodes)

    def caught_up():
        goal = target
        if goal is None:
            leader = cluster.leader()
            if leader is None:
                return False
            goal = cluster.status(leader)["commit_index"]
        return all(cluster.status(i)["applied_index"] >= goal for i in nodes)

    wait_until(
        caught_up,
        timeout,
        what=f"nodes {nodes} to catch up",
        detail=lambda: describe_cluster(cluster),
    )


@contextlib.contextmanager
def local_cluster(storage: str, runtime: str, n: int = 3, **kwargs):
    """A started LocalCluster with a leader."""
    with raftkv.LocalCluster(n=n, storage=storage, runtime=runtime, **kwargs) as cluster:
        cluster.wait_leader(timeout=WAIT)
        yield cluster


# --------------------------------------------------------------------------------------------
# checking histories
# --------------------------------------------------------------------------------------------

CHECK_TIMEOUT = 60.0


def assert_linearizable(history, tmp_path=None, name="history"):
    """Checks ``history``; on failure leaves the JSON and the HTML next to the test."""
    result = raftkv.check_linearizable(history, timeout=CHECK_TIMEOUT)
    if result.ok is not True and tmp_path is not None:
        (tmp_path / f"{name}.json").write_text(history.to_json())
        with contextlib.suppress(Exception):
            result.visualize(str(tmp_path / f"{name}.html"))
    assert result.ok is True, (
        f"{name} of {len(history)} ops: check_linearizable gave ok={result.ok!r}"
        + (f" (history and visualization in {tmp_path})" if tmp_path is not None else "")
    )
    return result


def tamper_one_get(history):
    """A copy of ``history`` whose first successful get with a value now reads a value that was
    never written: certainly not linearizable."""
    doc = json.loads(history.to_json())
    for op in doc["ops"]:
        out = op.get("output") or {}
        if (
            op["input"]["op"] == "get"
            and op.get("return") is not None
            and out.get("err") is None
            and out.get("value") is not None
        ):
            out["value"] = "TAMPERED-never-written-" + out["value"]
            break
    else:
        pytest.fail("the history has no successful get with a value to tamper with")
    return raftkv.History.from_json(json.dumps(doc))


# --------------------------------------------------------------------------------------------
# a concurrent workload: one thread and one Clerk per client, one shared History
# --------------------------------------------------------------------------------------------

#: outcomes that are answers of the service (the operation completed)
DEFINITE = (raftkv.KeyNotFound, raftkv.VersionMismatch)
#: outcomes that leave the operation's effect unknown
UNKNOWN = (raftkv.Timeout, raftkv.MaybeApplied)


class Workload:
    """Clients issuing random get / put / append / conditional put / delete on a few keys.

    ``timeout``: the Clerks' timeout, or a list of them (client c gets ``timeout[c % len]``):
    short ones make some operations end with an unknown outcome during elections.

    ``completed`` counts operations that got an answer from the service (including
    KeyNotFound / VersionMismatch), so ``wait_progress`` proves the cluster serves.
    Any exception other than the API's expected ones is kept in ``errors``.
    """

    def __init__(
        self,
        addrs,
        history,
        clients=4,
        keys=4,
        timeout=5.0,
        seed=None,
        pause=(0.0, 0.005),
        key_prefix="w",
        make_clerk=None,
    ):
        self.addrs = list(addrs)
        # make_clerk(timeout, history) -> a client with Clerk's methods (a ShardClerk...).
        self.make_clerk = make_clerk
        self.history = history
        self.clients = clients
        self.keys = [f"{key_prefix}{k}" for k in range(keys)]
        self.timeout = timeout
        self.seed = random.randrange(2**32) if seed is None else seed
        self.pause = pause
        self.stop_event = threading.Event()
        self.lock = threading.Lock()
        self.completed = 0
        self.unknown = 0
        self.errors: list[str] = []
        self.threads: list[threading.Thread] = []

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def start(self):
        for c in range(self.clients):
            t = threading.Thread(target=self._run, args=(c,), name=f"client-{c}", daemon=True)
            self.threads.append(t)
            t.start()

    def stop(self, join_timeout: float = 30.0):
        self.stop_event.set()
        for t in self.threads:
            t.join(join_timeout)
        alive = [t.name for t in self.threads if t.is_alive()]
        assert not alive, f"client threads still blocked {join_timeout} s after stop: {alive}"

    def _run(self, c: int):
        rng = random.Random(self.seed * 1000 + c)
        timeout = (
            self.timeout[c % len(self.timeout)]
            if isinstance(self.timeout, (list, tuple))
            else self.timeout
        )
        if self.make_clerk is not None:
            clerk = self.make_clerk(timeout, self.history)
        else:
            clerk = raftkv.Clerk(self.addrs, timeout=timeout, history=self.history)
        versions: dict[str, int] = {}
        n = 0
        while not self.stop_event.is_set():
            n += 1
            key = rng.choice(self.keys)
            value = f"c{c}n{n}"
            r = rng.random()
            try:
                if r < 0.40:
                    _, versions[key] = clerk.get(key)
                elif r < 0.65:
                    versions[key] = clerk.put(key, value)
                elif r < 0.80:
                    versions[key] = clerk.append(key, f"[{value}]")
                elif r < 0.92:
                    versions[key] = clerk.put(key, value, version=versions.get(key, 0))
                else:
                    clerk.delete(key)
                    versions[key] = 0
                with self.lock:
                    self.completed += 1
            except DEFINITE:
                versions.pop(key, None)
                with self.lock:
                    self.completed += 1
            except UNKNOWN:
                with self.lock:
                    self.unknown += 1
            except Exception as e:
                with self.lock:
                    self.errors.append(f"client {c}: {type(e).__module__}.{type(e).__name__}: {e}")
                time.sleep(0.05)
            lo, hi = self.pause
            if hi > 0:
                time.sleep(rng.uniform(lo, hi))

    def wait_progress(self, ops: int = 20, timeout: float = WAIT, what: str = ""):
        """Waits until ``ops`` more operations complete."""
        with self.lock:
            goal = self.completed + ops
        wait_until(
            lambda: self.completed >= goal,
            timeout,
            what=f"{ops} more completed operations {what}".strip(),
        )

    def summary(self) -> str:
        return (
            f"{self.clients} clients, seed {self.seed}: {self.completed} completed, "
            f"{self.unknown} unknown outcome"
        )

    def assert_no_errors(self):
        print(self.summary())
        assert not self.errors, "unexpected exceptions from clients:\n" + "\n".join(
            self.errors[:20]
        )


# --------------------------------------------------------------------------------------------
# a small disk (a tmpfs: root only, as in CI; without it the test fails rather than skips)
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def small_disk(path: pathlib.Path, size_mib: int):
    """A tmpfs of ``size_mib`` MiB mounted at ``path`` (root only: fails otherwise)."""
    path.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if r.returncode != 0:
        pytest.fail(f"this test needs to mount a tmpfs (root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=30)


def fill(disk: pathlib.Path) -> None:
    """Writes a file until the disk is full."""
    chunk = b"\0" * (1 << 20)
    with open(disk / "filler", "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(chunk)
            f.flush()
    with contextlib.suppress(OSError), open(disk / "filler-small", "wb") as f:
        while True:
            f.write(b"\0" * 4096)
            f.flush()


def fill_leaving(disk: pathlib.Path, free_bytes: int) -> None:
    """Fills the disk until about ``free_bytes`` are left."""
    st = os.statvfs(disk)
    left = st.f_bavail * st.f_frsize - free_bytes
    chunk = b"\0" * (1 << 20)
    with open(disk / "filler", "wb") as f:
        while left > 0:
            n = min(left, len(chunk))
            f.write(chunk[:n])
            left -= n
