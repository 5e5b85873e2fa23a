"""Issue 18: benchmark graphs (``raftkv bench --plot``, :mod:`raftkv.plot`) and the progress
bars of long commands (drawn on a terminal only)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

from test_cli import describe, run
from test_replay import console_errors, render

from raftkv.cli._common import Progress, with_progress
from raftkv.plot import Series, benchmark_svg


def points(svg: str) -> dict[str, list[tuple[float, float]]]:
    """Each drawn series' points, by name, in screen coordinates."""
    out = {}
    for name, pts in re.findall(r'class="series" data-name="([^"]*)" points="([^"]*)"', svg):
        out[name] = [tuple(map(float, p.split(","))) for p in pts.split()]
    return out


def test_bench_plot_draws_throughput_and_latency_against_clients(tmp_path):
    svg_path = tmp_path / "bench.svg"
    proc = run(
        [
            "bench",
            "--nodes",
            1,
            "--clients",
            "1,4",
            "--seconds",
            0.5,
            "--warmup",
            0.1,
            "--keyspace",
            50,
            "--plot",
            svg_path,
        ],
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, describe(proc)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]
    assert [r["clients"] for r in lines] == [1, 4], describe(proc)
    # stderr is a pipe here: no progress bar (no carriage returns, no bar)
    assert "\r" not in proc.stderr and "[#" not in proc.stderr, proc.stderr
    svg = svg_path.read_text()
    drawn = points(svg)
    assert set(drawn) == {"raftkv put", "p50", "p99", "p99.9"}, drawn.keys()
    assert all(len(p) == 2 for p in drawn.values()), drawn
    # more clients are further right; the higher percentile is higher up (smaller y) or equal
    (x1, _), (x4, _) = drawn["raftkv put"]
    assert x4 > x1
    for i in range(2):
        assert drawn["p99.9"][i][1] <= drawn["p99"][i][1] <= drawn["p50"][i][1]

    dom, log = render(svg_path, "", tmp_path)
    assert not console_errors(log), console_errors(log)
    assert dom.count("<polyline") == 4, dom[:2000]
    shot, blank = tmp_path / "plot.png", tmp_path / "blank.png"
    render(svg_path, "", tmp_path, screenshot=shot)
    empty = tmp_path / "empty.svg"
    empty.write_text(benchmark_svg("", [], []))
    render(empty, "", tmp_path, screenshot=blank)
    assert shot.read_bytes() != blank.read_bytes(), "the graph draws nothing"
    assert shot.stat().st_size > blank.stat().st_size, "the graph's lines add detail"


def test_plot_scales_and_escapes():
    svg = benchmark_svg(
        "<b>t</b>",
        [Series("a<script>", [(1, 10.0), (8, 20.0), (64, 40.0)])],
        [Series("lat", [(1, 0.5), (64, 50.0)], dashed=True)],
    )
    assert "<script>" not in svg and "a&lt;script&gt;" in svg and "&lt;b&gt;" in svg
    drawn = points(svg)
    (x1, y1), (x8, y8), (x64, y64) = drawn["a&lt;script&gt;"]
    # clients on a log axis: 1 → 8 → 64 are equally spaced; throughput grows upward
    assert abs((x8 - x1) - (x64 - x8)) < 0.5 and y1 > y8 > y64
    # latency on a log axis: two decades apart; the line is dashed
    assert 'stroke-dasharray="6 4"' in svg
    # nothing to draw is still a valid, empty graph
    assert benchmark_svg("", [], []).startswith("<svg")


def test_progress_draws_only_on_a_terminal(monkeypatch):
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    with Progress(10.0) as bar:  # StringIO is not a terminal
        bar.update(5.0, "half")
    assert err.getvalue() == ""
    with Progress(10.0, enabled=True) as bar:
        bar.update(5.0, "half")
    out = err.getvalue()
    assert out.startswith("\r\x1b[K[" + "#" * 15 + "." * 15 + "]") and "half" in out
    assert out.endswith("\n")


def test_with_progress_returns_the_result_and_raises_the_error():
    assert with_progress(None, "x", lambda: 42) == 42
    try:
        with_progress(1.0, "x", lambda: 1 / 0)
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("the error was swallowed")


def test_benchmarks_summarize_draws_both_systems(tmp_path):
    """benchmarks/summarize.py draws raftkv and etcd side by side from a results file."""
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("summarize", root / "benchmarks/summarize.py")
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    results = tmp_path / "r.jsonl"
    recs = [{"kind": "machine", "date": "d"}]
    for system, ops in (("raftkv", 2000.0), ("etcd", 900.0)):
        for clients in (1, 8):
            recs.append(
                {
                    "system": system,
                    "mode": "put",
                    "clients": clients,
                    "case": f"put-{clients}",
                    "ok": True,
                    "ops_per_s": ops * clients,
                    "lat_us": {"p50": 500, "p99": 900, "p999": 2000},
                    "errors": 0,
                }
            )
    results.write_text("\n".join(json.dumps(r) for r in recs))
    assert summarize.main([str(results), "--no-plot"]) == 0
    machine, runs = summarize.load(str(results))
    rows, _ = summarize.summarize(machine, runs)
    out = tmp_path / "r.svg"
    summarize.plot_svg(rows, "t", str(out))
    drawn = points(out.read_text())
    assert {"raftkv put", "etcd put", "raftkv put p99", "etcd put p50"} <= set(drawn)


def test_benchmarks_summarize_reads_section_and_graph(tmp_path):
    """Issue 20: summarize.py's Reads section compares each read case with etcd's same mode and
    raftkv's own put at the same client count, says whether the targets are met, and draws the
    read cases in a second graph that renders in Chromium."""
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location("summarize", root / "benchmarks/summarize.py")
    summarize = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(summarize)
    cases = [
        ("raftkv", "put-64", 10_000.0),
        ("etcd", "put-64", 2_000.0),
        ("raftkv", "mixed-64", 9_000.0),
        ("etcd", "mixed-64", 2_000.0),
        ("raftkv", "get-64", 12_000.0),
        ("etcd", "get-64", 4_000.0),
        ("raftkv", "mixed_lease-64", 16_000.0),
        ("raftkv", "get_lease-64", 40_000.0),
    ]
    recs = [{"kind": "machine", "date": "d"}]
    for system, case, ops in cases:
        recs.append(
            {
                "system": system,
                "mode": case.split("-")[0].split("_")[0],
                "clients": 64,
                "case": case,
                "ok": True,
                "ops_per_s": ops,
                "lat_us": {"p50": 500, "p99": 900, "p999": 2000},
                "errors": 0,
                "noise": {"loadavg_before": [1.5, 1.0, 1.0]},
            }
        )
    results = tmp_path / "r.jsonl"
    results.write_text("\n".join(json.dumps(r) for r in recs))
    machine, runs = summarize.load(str(results))
    rows, md = summarize.summarize(machine, runs)
    assert "## Reads (issue 20)" in md
    assert "| mixed_lease 64 | 16,000 | 500 | 900 | 8.00x | 1.60x | 1.5 |" in md, md
    assert "Target mixed 64 raftkv/etcd >= 7x: best 8.00x (mixed_lease 64): met." in md
    assert "Target get 64 / raftkv put 64 >= 3x: best 4.00x (get_lease 64): met." in md
    out = tmp_path / "reads.svg"
    assert summarize.plot_reads_svg(rows, "reads", str(out))
    drawn = points(out.read_text())
    assert {"raftkv mixed_lease", "raftkv get_lease", "etcd get", "raftkv get p99"} <= set(drawn)
    dom, log = render(out, "", tmp_path)
    assert not console_errors(log), console_errors(log)
    assert dom.count("<polyline") == len(drawn), dom[:2000]


def test_benchmarks_large_values_draw_mb_per_s_and_p99_by_value_size(tmp_path):
    """benchmarks/summarize_large.py (issue 20): MB/s and p99 against value size, a line per
    system and client count, in a table and a graph that headless Chromium draws."""
    import importlib.util

    root = Path(__file__).resolve().parent.parent
    spec = importlib.util.spec_from_file_location(
        "summarize_large", root / "benchmarks/summarize_large.py"
    )
    large = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(large)
    results = tmp_path / "large-x.jsonl"
    recs = [{"kind": "machine", "date": "d", "repeats": 1}]
    for size, clients_list in ((4096, (1, 8)), (65536, (1, 8)), (1 << 20, (1, 8))):
        for system, ops in (("raftkv", 400.0), ("etcd", 100.0)):
            for clients in clients_list:
                recs.append(
                    {
                        "system": system,
                        "mode": "put",
                        "clients": clients,
                        "case": f"put-{clients}",
                        "ok": True,
                        "value_size": size,
                        "keyspace": 64,
                        "ops_per_s": ops * clients * 4096 / size,
                        "lat_us": {"p50": 500, "p99": 900 * size // 4096, "p999": 2000},
                        "errors": 0,
                    }
                )
    results.write_text("\n".join(json.dumps(r) for r in recs))
    assert large.main([str(results)]) == 0
    md = (tmp_path / "large-x.md").read_text()
    # 400 ops/s x 4096 B at 1 client = 1.6 MB/s; raftkv/etcd = 4x
    assert "| 4 KiB | 64 | 1 | 1.6 |" in md and "4.00x" in md, md
    assert "| 1 MiB | 64 | 8 |" in md, md
    svg_path = tmp_path / "large-x.svg"
    svg = svg_path.read_text()
    drawn = points(svg)
    assert set(drawn) == {
        "raftkv 1 client",
        "raftkv 8 clients",
        "etcd 1 client",
        "etcd 8 clients",
        "raftkv 1 client p99",
        "raftkv 8 clients p99",
        "etcd 1 client p99",
        "etcd 8 clients p99",
    }, drawn.keys()
    assert "value size (KiB)" in svg and "MB/s" in svg and "closed-loop clients" not in svg
    # larger values further right; MB/s is the same at every size here, so the line is flat;
    # raftkv (4x) is above etcd (smaller y); p99 grows with the value size (smaller y)
    xs = [x for x, _ in drawn["raftkv 8 clients"]]
    assert xs == sorted(xs) and len(set(xs)) == 3
    assert len({round(y) for _, y in drawn["raftkv 8 clients"]}) == 1
    assert drawn["raftkv 8 clients"][0][1] < drawn["etcd 8 clients"][0][1]
    p99 = [y for _, y in drawn["etcd 8 clients p99"]]
    assert p99 == sorted(p99, reverse=True)
    dom, log = render(svg_path, "", tmp_path)
    assert not console_errors(log), console_errors(log)
    assert dom.count("<polyline") == 8, dom[:2000]
