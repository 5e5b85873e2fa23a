"""The ``raftkv`` command line: ``check`` on the shipped Porcupine / Jepsen histories (their
known verdicts), on our own JSON histories and on malformed input; ``get`` / ``put``; ``demo``."""

from __future__ import annotations

import json
import os
import subprocess

import pytest
from conftest import (
    PORCUPINE_DIR,
    WAIT,
    local_cluster,
    raftkv_cli,
    read_verdicts,
    skip_without_porcupine,
    tamper_one_get,
)

import raftkv

pytestmark = pytest.mark.cli

CHECK_TIMEOUT = 120  # seconds for one `raftkv check` process


def run(args, timeout=CHECK_TIMEOUT, cwd=None, **kw):
    env = dict(os.environ)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return subprocess.run(
        raftkv_cli() + [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
        **kw,
    )


def describe(proc):
    return (
        f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-3000:]}\n"
        f"--- stderr\n{proc.stderr[-3000:]}"
    )


def verdict_params(sub, *, skip_c50=False):
    if not (PORCUPINE_DIR / sub / "VERDICTS.txt").is_file():
        return [
            pytest.param(
                None,
                None,
                id=f"{sub}-missing",
                marks=pytest.mark.skip(
                    reason=f"no shipped data at {PORCUPINE_DIR / sub} "
                    "(expected shared/ beside the checkout)"
                ),
            )
        ]
    out = []
    for path, ok in read_verdicts(sub):
        if skip_c50 and path.name.startswith("c50"):
            continue  # checking c50 as one partition is Porcupine's slow case: kept out
        out.append(pytest.param(path, ok, id=path.name))
    return out


def expect_verdict(proc, ok):
    assert proc.returncode == (0 if ok else 1), describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)


@pytest.mark.parametrize("path,ok", verdict_params("kv"))
def test_check_porcupine_kv(path, ok):
    expect_verdict(run(["check", path, "--format", "porcupine-kv"]), ok)


@pytest.mark.parametrize("path,ok", verdict_params("kv", skip_c50=True))
def test_check_porcupine_kv_no_partition(path, ok):
    expect_verdict(run(["check", path, "--format", "porcupine-kv", "--no-partition"]), ok)


@pytest.mark.parametrize("path,ok", verdict_params("jepsen-etcd"))
def test_check_jepsen_etcd(path, ok):
    expect_verdict(run(["check", path, "--format", "jepsen-etcd", "--model", "register"]), ok)


def test_check_html_output(tmp_path):
    skip_without_porcupine()
    out = tmp_path / "c01-bad.html"
    proc = run(
        ["check", PORCUPINE_DIR / "kv" / "c01-bad.txt", "--format", "porcupine-kv", "--html", out]
    )
    expect_verdict(proc, False)
    assert "<html" in out.read_text(encoding="utf-8").lower()


# --- malformed input: exit 2, one line, no traceback ------------------------------------------


def expect_bad_input(proc):
    assert proc.returncode == 2, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, "expected a one-line error\n" + describe(proc)


@pytest.mark.parametrize(
    "fmt,content",
    [
        (
            "porcupine-kv",
            '{:process 0, :type :invoke, :f :get, :key "0"\nthis is not a history {{{\n',
        ),
        (
            "jepsen-etcd",
            "INFO  jepsen.util - 0\t:invoke\t:read\tnil\n"
            "INFO  jepsen.util - 0\t:invoke\t:frobnicate\tnil\n",
        ),
        ("json", '{"model": "kv", "ops": [ {"client": 0, '),
        ("json", "\x00\x01\x02 binary garbage \xff"),
    ],
    ids=["porcupine-kv", "jepsen-etcd", "json-truncated", "json-garbage"],
)
def test_check_malformed_file_exits_2(tmp_path, fmt, content):
    bad = tmp_path / "bad.txt"
    bad.write_text(content, encoding="utf-8", errors="surrogateescape")
    extra = ["--model", "register"] if fmt == "jepsen-etcd" else []
    expect_bad_input(run(["check", bad, "--format", fmt] + extra))


def test_check_missing_file_exits_2(tmp_path):
    expect_bad_input(run(["check", tmp_path / "does-not-exist.json"]))


# --- our own JSON histories ---------------------------------------------------------------------


@pytest.mark.slow
def test_check_json_history_from_a_cluster(tmp_path):
    history = raftkv.History()
    with local_cluster("memory", "tokio") as cluster:
        clerks = [cluster.clerk(history=history) for _ in range(3)]
        for i in range(30):
            c = clerks[i % 3]
            c.put(f"k{i % 4}", f"v{i}")
            if i >= 4:
                c.get(f"k{(i + 1) % 4}")
    good = tmp_path / "good.json"
    good.write_text(history.to_json())
    bad = tmp_path / "bad.json"
    bad.write_text(tamper_one_get(history).to_json())
    expect_verdict(run(["check", good]), True)
    expect_verdict(run(["check", good, "--format", "json", "--model", "kv"]), True)
    expect_verdict(run(["check", bad, "--format", "json"]), False)
    html = tmp_path / "bad.html"
    expect_verdict(run(["check", bad, "--html", html, "--timeout", "60"]), False)
    assert "<html" in html.read_text(encoding="utf-8").lower()


# --- get / put ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_get_and_put_commands():
    with local_cluster("memory", "smol") as cluster:
        endpoints = ",".join(cluster.addrs)
        proc = run(["put", "cli-key", "cli-value", "--endpoints", endpoints], timeout=60)
        assert proc.returncode == 0, describe(proc)
        clerk = raftkv.Clerk(cluster.addrs, timeout=WAIT)
        assert clerk.get("cli-key") == (b"cli-value", 1)

        proc = run(["get", "cli-key", "--endpoints", endpoints], timeout=60)
        assert proc.returncode == 0, describe(proc)
        assert "cli-value" in proc.stdout

        proc = run(["put", "cli-key", "v2", "--version", "1", "--endpoints", endpoints], timeout=60)
        assert proc.returncode == 0, describe(proc)
        assert clerk.get("cli-key") == (b"v2", 2)

        # a failed conditional put and a missing key: non-zero, no traceback
        proc = run(["put", "cli-key", "v3", "--version", "1", "--endpoints", endpoints], timeout=60)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
        proc = run(["get", "no-such-key", "--endpoints", endpoints], timeout=60)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, describe(proc)
        assert clerk.get("cli-key") == (b"v2", 2)


# --- demo ----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_demo(tmp_path):
    proc = run(["demo"], timeout=240, cwd=tmp_path)
    assert proc.returncode == 0, describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    html = tmp_path / "raftkv-demo.html"
    assert html.is_file(), f"no raftkv-demo.html in the working directory\n{describe(proc)}"
    assert "<html" in html.read_text(encoding="utf-8").lower()
    assert proc.stdout.strip(), "the demo prints a summary"
    replay = tmp_path / "raftkv-demo-replay.html"
    assert replay.is_file(), f"no replay next to the history page\n{describe(proc)}"
    assert f"replay: {replay}" in proc.stdout, describe(proc)
    assert 'id="trace-data"' in replay.read_text(encoding="utf-8")


def test_help_exits_0():
    proc = run(["--help"], timeout=60)
    assert proc.returncode == 0, describe(proc)
    for command in ("serve", "get", "put", "demo", "bench", "check"):
        assert command in proc.stdout, describe(proc)
    proc = run(["check", "--help"], timeout=60)
    assert proc.returncode == 0, describe(proc)
    assert "--no-partition" in proc.stdout


def test_json_history_file_example_from_the_api(tmp_path):
    doc = {
        "model": "kv",
        "ops": [
            {
                "client": 0,
                "call": 1200,
                "return": 5300,
                "input": {"op": "put", "key": "k", "value": "v", "version": None},
                "output": {"value": None, "version": 1, "err": None},
            }
        ],
    }
    path = tmp_path / "api.json"
    path.write_text(json.dumps(doc))
    expect_verdict(run(["check", path, "--format", "json"]), True)


@pytest.mark.parametrize("name,ok", [("c50-ok.txt", True), ("c50-bad.txt", False)])
def test_check_timeout_gives_unknown_or_the_verdict_promptly(name, ok):
    """c50 as one partition is the slow case: with --timeout 1 the check ends promptly, with
    the verdict or with exit 2 (unknown)."""
    skip_without_porcupine()
    import time

    start = time.monotonic()
    proc = run(
        [
            "check",
            PORCUPINE_DIR / "kv" / name,
            "--format",
            "porcupine-kv",
            "--no-partition",
            "--timeout",
            "1",
        ],
        timeout=60,
    )
    elapsed = time.monotonic() - start
    assert proc.returncode in ((0 if ok else 1), 2), describe(proc)
    assert "Traceback" not in proc.stderr, describe(proc)
    assert elapsed < 30, f"--timeout 1 took {elapsed:.1f} s"


@pytest.mark.parametrize("mode", ["put", "mixed"])
def test_bench_starts_serve_processes_and_prints_one_json_line(mode, tmp_path, monkeypatch):
    """`raftkv bench` with its own 3 `raftkv serve` processes: one JSON line on stdout with the
    schema of the issue, no errors, and no server left behind."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the servers' data dirs: found by `ps` below
    proc = run(
        [
            "bench",
            "--nodes",
            3,
            "--clients",
            4,
            "--seconds",
            1,
            "--warmup",
            0.2,
            "--keyspace",
            100,
            "--mode",
            mode,
        ],
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, describe(proc)
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, describe(proc)
    r = json.loads(lines[0])
    for field in (
        "mode",
        "clients",
        "nodes",
        "seconds",
        "value_size",
        "ops_per_s",
        "lat_us",
        "errors",
    ):
        assert field in r, (field, r)
    assert r["mode"] == mode and r["clients"] == 4 and r["nodes"] == 3
    assert r["ops_per_s"] > 0 and r["errors"] == 0, r
    assert 0 < r["lat_us"]["p50"] <= r["lat_us"]["p99"] <= r["lat_us"]["p999"], r
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(tmp_path) not in ps, "a raftkv serve process outlived the bench"


def test_bench_function_accepts_a_keyspace():
    with local_cluster("memory", "tokio") as cluster:
        r = raftkv.bench(
            cluster.addrs, clients=2, seconds=0.5, warmup=0.1, mode="mixed", keyspace=20
        )
        assert r["ops_per_s"] > 0 and r["errors"] == 0


def test_serve_rejects_a_worker_count_out_of_range():
    proc = run(
        ["serve", "--id", 1, "--peers", "1=127.0.0.1:1", "--storage", "memory", "--workers", 0],
        timeout=30,
    )
    assert proc.returncode == 2, describe(proc)
    assert "--workers" in proc.stderr and "Traceback" not in proc.stderr, describe(proc)


def test_serve_runs_the_runtime_with_the_workers_asked_for(tmp_path):
    """`raftkv serve --workers 3`: the process's tokio runtime has exactly 3 worker threads
    (`raftkv bench` starts its servers with 1)."""
    from raftkv.procs import free_ports

    peer, client = free_ports(2)
    proc = subprocess.Popen(
        raftkv_cli()
        + [
            "serve",
            "--id",
            "1",
            "--peers",
            f"1=127.0.0.1:{peer}",
            "--client-addrs",
            f"1=127.0.0.1:{client}",
            "--storage",
            "memory",
            "--workers",
            "3",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        clerk = raftkv.Clerk([f"127.0.0.1:{client}"], timeout=WAIT)
        clerk.put(b"k", b"v")  # the node is up and serving
        names = [
            open(f"/proc/{proc.pid}/task/{t}/comm").read().strip()
            for t in os.listdir(f"/proc/{proc.pid}/task")
        ]
        assert names.count("raftkv-tokio") == 3, names
    finally:
        proc.terminate()
        proc.wait(timeout=30)
