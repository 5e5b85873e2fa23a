#!/usr/bin/env python3
"""Summarize a benchmarks/large_values.sh results file: MB/s and latency by value size.

  summarize_large.py results/large-STAMP.jsonl

Writes and prints results/large-STAMP.md: per value size and client count, raftkv's and etcd's
median MB/s (ops/s x value size, 1 MB = 10^6 bytes), p50 and p99, and the ratios; and writes
results/large-STAMP.svg: MB/s and p99 against value size, one line per system and client count
(drawn by the package's raftkv/plot.py). The medians come from summarize.py, per value size.
Standard library only.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import summarize as base


def kib(size: int) -> str:
    return f"{size >> 20} MiB" if size >= 1 << 20 else f"{size >> 10} KiB"


def rows_by_size(machine: dict, runs: list[dict]) -> list[tuple[int, dict]]:
    """(value size, summarize.py's row) for every value size and case, put cases only."""
    out = []
    for size in sorted({r["value_size"] for r in runs if r.get("value_size")}):
        rows, _ = base.summarize(machine, [r for r in runs if r.get("value_size") == size])
        out += [(size, row) for row in rows if row["mode"] == "put"]
    return out


def mbps(d: dict, size: int) -> float | None:
    return None if d["ops"] is None else d["ops"] * size / 1e6


def table(machine: dict, runs: list[dict], rows: list[tuple[int, dict]]) -> str:
    lines = [
        f"# raftkv vs etcd with large values, {machine.get('date', '?')}",
        "",
        f"{machine.get('repeats', '?')} repeat(s) of {machine.get('warmup', '?')} s warm-up + "
        f"{machine.get('seconds', '?')} s measured per case and system; put only, closed-loop "
        f"clients to the leader, durable, 3 nodes each; etcd {machine.get('etcd', '?')} default "
        f"flags; raftkv checkout {machine.get('checkout', '?')}, LMDB. Medians over the repeats; "
        "1 MB = 10^6 bytes.",
        "",
        "| value | keyspace | clients | raftkv MB/s | raftkv p50 ms | raftkv p99 ms | etcd MB/s "
        "| etcd p50 ms | etcd p99 ms | MB/s raftkv/etcd | p99 etcd/raftkv "
        "| MB per CPU-second raftkv/etcd | errors r/e "
        "| other cores (max) | noisy runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---|",
    ]
    keyspaces = {r["value_size"]: r.get("keyspace") for r in runs}

    def ms(x):
        return "-" if x is None else f"{x / 1000:,.1f}"

    def mb(x):
        return "-" if x is None else f"{x:,.1f}"

    for size, row in rows:
        r_, e_ = row["raftkv"], row["etcd"]
        other = "-" if row["other_max"] is None else f"{row['other_max']:.2f}"
        lines.append(
            f"| {kib(size)} | {keyspaces.get(size, '?')} | {row['clients']} "
            f"| {mb(mbps(r_, size))} | {ms(r_['p50'])} | {ms(r_['p99'])} "
            f"| {mb(mbps(e_, size))} | {ms(e_['p50'])} | {ms(e_['p99'])} "
            f"| {base.fmt_ratio(row['tput_ratio'])} | {base.fmt_ratio(row['p99_ratio'])} "
            f"| {base.fmt_ratio(row['core_ratio'])} | {r_['errors']}/{e_['errors']} "
            f"| {other} | {row['noisy']}/{row['runs']} |"
        )
    failed = [r for r in runs if not r.get("ok")]
    if failed:
        lines += [
            "",
            f"Failed runs ({len(failed)}): "
            + "; ".join(
                f"{r.get('system')} {kib(r.get('value_size') or 0)} {r.get('case')} "
                f"repeat {r.get('repeat')}: {r.get('error', '?')}"
                for r in failed
            ),
        ]
    return "\n".join(lines) + "\n"


def plot_svg(rows: list[tuple[int, dict]], title: str, path: str) -> None:
    """MB/s and p99 (medians) against value size in KiB (1024 = 1 MiB), a line per system and
    client count."""
    pl = base.load_plot_module()
    client_counts = sorted({row["clients"] for _, row in rows})
    throughput, latency = [], []
    for k, s in enumerate(base.SYSTEMS):
        for j, clients in enumerate(client_counts):
            pts = [(size, row[s]) for size, row in rows if row["clients"] == clients]
            pts = [(size, d) for size, d in pts if d["ops"] is not None]
            if not pts:
                continue
            # a colour per system and client count; etcd dashed with squares
            color = pl.PALETTE[(2 * j + k) % len(pl.PALETTE)]
            style = {"dashed": s == "etcd", "marker": "square" if s == "etcd" else "circle"}
            name = f"{s} {clients} client{'s' if clients > 1 else ''}"
            throughput.append(
                pl.Series(name, [(size / 1024, mbps(d, size)) for size, d in pts], color, **style)
            )
            latency.append(
                pl.Series(
                    f"{name} p99",
                    [(size / 1024, d["p99"] / 1000.0) for size, d in pts],
                    color,
                    **style,
                )
            )
    pl.write_benchmark_svg(
        path,
        title,
        throughput,
        latency,
        latency_label="p99 latency (ms)",
        throughput_label="MB/s",
        x_label="value size (KiB)",
        x_unit="KiB",
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("jsonl")
    args = p.parse_args(argv)
    machine, runs = base.load(args.jsonl)
    if not runs:
        print(f"summarize_large: no runs in {args.jsonl}", file=sys.stderr)
        return 1
    rows = rows_by_size(machine, runs)
    md = table(machine, runs, rows)
    stem = os.path.splitext(args.jsonl)[0]
    title = f"raftkv vs etcd, put with large values (3 nodes, durable), {machine.get('date', '')}"
    plot_svg(rows, title, stem + ".svg")
    md += f"\nGraph: [{os.path.basename(stem)}.svg]({os.path.basename(stem)}.svg)\n"
    md += f"\nRaw runs: `{os.path.basename(args.jsonl)}`\n"
    with open(stem + ".md", "w") as f:
        f.write(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
