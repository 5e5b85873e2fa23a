#!/usr/bin/env python3
"""Summarize a benchmarks/run.sh results file.

  summarize.py results/STAMP.jsonl [--no-plot]

Writes results/STAMP.md (a Markdown table of medians per case and system, the ratios
raftkv/etcd for throughput and etcd/raftkv for p99, and the noise recorded around the
runs) and prints it; writes results/STAMP.svg (throughput, and p50 and p99 latency, vs
clients, both systems side by side; drawn by the package's own raftkv/plot.py, no plotting
library) and results/STAMP.png (the same with min–max bars) when matplotlib can be imported.
Standard library only, apart from the optional matplotlib.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys

SYSTEMS = ("raftkv", "etcd")
# a run counts as noisy when other processes (and the kernel) used more than this many
# cores during it, or the machine was this busy just before it
NOISY_OTHER_CORES = 0.3
NOISY_BG_PCT = 20.0


def load(path: str) -> tuple[dict, list[dict]]:
    machine: dict = {}
    runs: list[dict] = []
    with open(path) as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                print(f"summarize: {path}:{n}: not JSON, skipped", file=sys.stderr)
                continue
            if rec.get("kind") == "machine":
                machine = rec
            elif "system" in rec:
                runs.append(rec)
    return machine, runs


def case_key(case: str) -> tuple:
    mode, _, clients = case.partition("-")
    return (0 if mode == "put" else 1 if mode == "mixed" else 2, mode, int(clients or 0))


def noisy(r: dict) -> bool:
    n = r.get("noise") or {}
    return (n.get("other_cores") or 0) > NOISY_OTHER_CORES or (
        n.get("bg_pct_before") or 0
    ) > NOISY_BG_PCT


def med(xs: list[float]) -> float | None:
    return statistics.median(xs) if xs else None


def fmt_int(x) -> str:
    return "-" if x is None else f"{x:,.0f}"


def fmt_ratio(x) -> str:
    return "-" if x is None else f"{x:.2f}x"


def summarize(machine: dict, runs: list[dict]) -> tuple[list[dict], str]:
    cases = sorted({r["case"] for r in runs if r.get("case")}, key=case_key)
    rows = []
    for case in cases:
        row: dict = {"case": case, "mode": case_key(case)[1], "clients": case_key(case)[2]}
        for s in SYSTEMS:
            all_runs = [r for r in runs if r.get("case") == case and r.get("system") == s]
            ok = [r for r in all_runs if r.get("ok")]
            ops = [r["ops_per_s"] for r in ok]
            row[s] = {
                "n": len(all_runs),
                "ok": len(ok),
                "ops": med(ops),
                "ops_min": min(ops) if ops else None,
                "ops_max": max(ops) if ops else None,
                "ops_all": ops,
                "p50": med([r["lat_us"]["p50"] for r in ok]),
                "p99": med([r["lat_us"]["p99"] for r in ok]),
                "p99_all": [r["lat_us"]["p99"] for r in ok],
                "errors": sum(r.get("errors") or 0 for r in ok),
                # ops per CPU-second of the system and its load generator (noise.ours_cores):
                # what a run got done per core it was given, on a machine shared with others
                "per_core": med(
                    [
                        r["ops_per_s"] / r["noise"]["ours_cores"]
                        for r in ok
                        if (r.get("noise") or {}).get("ours_cores")
                    ]
                ),
            }
        r_, e_ = row["raftkv"], row["etcd"]
        row["tput_ratio"] = r_["ops"] / e_["ops"] if r_["ops"] and e_["ops"] else None
        row["p99_ratio"] = e_["p99"] / r_["p99"] if r_["p99"] and e_["p99"] else None
        row["core_ratio"] = (
            r_["per_core"] / e_["per_core"] if r_["per_core"] and e_["per_core"] else None
        )
        case_runs = [r for r in runs if r.get("case") == case]
        others = [
            r["noise"]["other_cores"]
            for r in case_runs
            if (r.get("noise") or {}).get("other_cores") is not None
        ]
        bgs = [
            r["noise"]["bg_pct_before"]
            for r in case_runs
            if (r.get("noise") or {}).get("bg_pct_before") is not None
        ]
        row["other_max"] = max(others) if others else None
        row["bg_max"] = max(bgs) if bgs else None
        row["noisy"] = sum(1 for r in case_runs if noisy(r))
        row["runs"] = len(case_runs)
        rows.append(row)

    def cell_ops(d: dict) -> str:
        if d["ops"] is None:
            return "failed" if d["n"] else "-"
        s = fmt_int(d["ops"])
        if d["ok"] > 1:
            s += f" ({fmt_int(d['ops_min'])}–{fmt_int(d['ops_max'])})"
        return s

    raft = machine.get("raftkv") or {}
    lines = []
    kind = "quick" if machine.get("quick") else "full"
    lines.append(f"# raftkv vs etcd, {machine.get('date', '?')} ({kind} run)")
    lines.append("")
    lines.append(
        f"Machine: {machine.get('nproc', '?')} cores ({machine.get('cpu', '?')}), {machine.get('mem_gib', '?')} GiB, "
        f"kernel {machine.get('kernel', '?')}; data dirs on {machine.get('tmp_fs', '?')}; "
        f"4 KiB O_DSYNC write before the runs: {machine.get('dsync_4k_us', '?')} us; "
        f"load average at start {machine.get('loadavg', '?')}."
    )
    lines.append(
        f"etcd {machine.get('etcd', '?')}, 3 members, default flags{(' + ' + machine['etcd_extra_flags']) if machine.get('etcd_extra_flags') else ''}; "
        f"raftkv {raft.get('version', '?')} (`{raft.get('path', '?')}`, checkout {machine.get('checkout', '?')}), "
        f"3 nodes, LMDB."
    )
    lines.append(
        f"Per run: {machine.get('warmup', '?')} s warm-up + {machine.get('seconds', '?')} s measured; "
        f"{machine.get('repeats', '?')} repeat(s); {machine.get('value_size', '?')}-byte values; "
        f"closed-loop clients to the leader; mixed = 50% linearizable get / 50% put; "
        f"keys uniform over {machine.get('keyspace', machine.get('keyspace_etcd', '?'))} on both systems. "
        f"Values are medians over repeats (ops/s range in brackets)."
    )
    lines.append("")
    lines.append(
        "| case | raftkv ops/s | raftkv p50 us | raftkv p99 us | etcd ops/s | etcd p50 us | etcd p99 us "
        "| ops/s raftkv/etcd | p99 etcd/raftkv | ops per CPU-second raftkv/etcd | errors r/e "
        "| other cores (max) | busy before % (max) | noisy runs |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---|")
    for row in rows:
        r_, e_ = row["raftkv"], row["etcd"]
        other = "-" if row["other_max"] is None else f"{row['other_max']:.2f}"
        bg = "-" if row["bg_max"] is None else f"{row['bg_max']:.0f}"
        lines.append(
            f"| {row['mode']} {row['clients']} | {cell_ops(r_)} | {fmt_int(r_['p50'])} | {fmt_int(r_['p99'])} "
            f"| {cell_ops(e_)} | {fmt_int(e_['p50'])} | {fmt_int(e_['p99'])} "
            f"| {fmt_ratio(row['tput_ratio'])} | {fmt_ratio(row['p99_ratio'])} "
            f"| {fmt_ratio(row['core_ratio'])} | {r_['errors']}/{e_['errors']} "
            f"| {other} | {bg} | {row['noisy']}/{row['runs']} |"
        )
    lines.append("")
    failed = [r for r in runs if not r.get("ok")]
    n_noisy = sum(1 for r in runs if noisy(r))
    lines.append(
        f'Noise: "other cores" is CPU used during a run by everything but the measured system and its '
        f'load generator (kernel work, other jobs), out of {machine.get("nproc", "?")}; "busy before" is the '
        f"machine's CPU use in a 1 s sample just before the run. {n_noisy} of {len(runs)} runs were noisy "
        f"(other cores > {NOISY_OTHER_CORES} or busy before > {NOISY_BG_PCT:.0f}%): compare such numbers only "
        f"with runs taken under the same conditions."
    )
    lines.extend(reads_section(rows, runs))
    if failed:
        lines.append("")
        lines.append(
            f"Failed runs ({len(failed)}): "
            + "; ".join(
                f"{r.get('system')} {r.get('case')} repeat {r.get('repeat')}: {r.get('error', '?')}"
                for r in failed
            )
        )
    return rows, "\n".join(lines) + "\n"


# Issue 20's targets: raftkv's best mixed case at 64 clients against etcd's mixed 64, and
# raftkv's get-only case at 64 clients against its own put 64.
MIXED_TARGET = 7.0
GET_OVER_PUT_TARGET = 3.0


def row_of(rows: list[dict], mode: str, clients: int) -> dict | None:
    return next((r for r in rows if r["mode"] == mode and r["clients"] == clients), None)


def reads_section(rows: list[dict], runs: list[dict]) -> list[str]:
    """Issue 20 (reads): each mixed and get case of raftkv (plain and its read variants: lease,
    follower, both) against etcd's plain case of the same mode, and against raftkv's own put
    at the same client count; the load average before each run."""
    read_rows = [r for r in rows if r["mode"].split("_")[0] in ("mixed", "get")]
    if not read_rows:
        return []
    out = ["", "## Reads (issue 20)", ""]
    out.append(
        "| case | raftkv ops/s | p50 us | p99 us | / etcd same mode | / raftkv put same clients | load avg before (1 min) |"
    )
    out.append("|---|---:|---:|---:|---:|---:|---|")
    for row in read_rows:
        base = row["mode"].split("_")[0]
        r_ = row["raftkv"]
        if r_["ops"] is None:
            continue
        etcd = row_of(rows, base, row["clients"])
        put = row_of(rows, "put", row["clients"])
        vs_etcd = r_["ops"] / etcd["etcd"]["ops"] if etcd and etcd["etcd"]["ops"] else None
        vs_put = r_["ops"] / put["raftkv"]["ops"] if put and put["raftkv"]["ops"] else None
        loads = [
            f"{(r.get('noise') or {}).get('loadavg_before', ['?'])[0]}"
            for r in runs
            if r.get("case") == row["case"] and r.get("system") == "raftkv"
        ]
        out.append(
            f"| {row['mode']} {row['clients']} | {fmt_int(r_['ops'])} | {fmt_int(r_['p50'])} "
            f"| {fmt_int(r_['p99'])} | {fmt_ratio(vs_etcd)} | {fmt_ratio(vs_put)} | {', '.join(loads)} |"
        )
    out.append("")
    for mode, target, what, against in (
        ("mixed", MIXED_TARGET, "mixed 64 raftkv/etcd", "etcd"),
        ("get", GET_OVER_PUT_TARGET, "get 64 / raftkv put 64", "put"),
    ):
        best = None
        for row in read_rows:
            if (
                row["mode"].split("_")[0] != mode
                or row["clients"] != 64
                or row["raftkv"]["ops"] is None
            ):
                continue
            ref = row_of(rows, mode if against == "etcd" else "put", 64)
            side = "etcd" if against == "etcd" else "raftkv"
            if ref and ref[side]["ops"]:
                ratio = row["raftkv"]["ops"] / ref[side]["ops"]
                if best is None or ratio > best[0]:
                    best = (ratio, row["mode"])
        if best is None:
            out.append(f"Target {what} >= {target:g}x: not measured in this run.")
        else:
            verdict = "met" if best[0] >= target else "NOT met"
            out.append(
                f"Target {what} >= {target:g}x: best {best[0]:.2f}x ({best[1]} 64): {verdict}."
            )
    return out


def plot_reads_svg(rows: list[dict], title: str, path: str) -> bool:
    """raftkv's read cases (plain and variants) and etcd's, throughput and p99 vs clients."""
    pl = load_plot_module()
    throughput, latency = [], []
    for row_mode in sorted(
        {r["mode"] for r in rows if r["mode"].split("_")[0] in ("mixed", "get")}
    ):
        for s in SYSTEMS:
            pts = [
                (row["clients"], row[s])
                for row in rows
                if row["mode"] == row_mode and row[s]["ops"] is not None
            ]
            if not pts:
                continue
            # one color per system and read variant, one marker per mode
            variant = row_mode.partition("_")[2]
            slot = (
                1 if s == "etcd" else {"": 0, "lease": 2, "follower": 3, "both": 4}.get(variant, 5)
            )
            color = pl.PALETTE[slot % len(pl.PALETTE)]
            marker = "circle" if row_mode.startswith("get") else "square"
            name = f"{s} {row_mode}"
            throughput.append(
                pl.Series(name, [(c, d["ops"]) for c, d in pts], color, marker=marker)
            )
            latency.append(
                pl.Series(
                    f"{name} p99", [(c, d["p99"] / 1000.0) for c, d in pts], color, marker=marker
                )
            )
    if not throughput:
        return False
    pl.write_benchmark_svg(path, title, throughput, latency)
    return True


def load_plot_module():
    """The package's SVG plotter, loaded from its file (importing the ``raftkv`` package would
    need its built extension, which this script does not)."""
    import importlib.util

    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(here, "..", "pypkg", "raftkv", "plot.py")
    spec = importlib.util.spec_from_file_location("raftkv_plot", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["raftkv_plot"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def plot_svg(rows: list[dict], title: str, path: str) -> None:
    """Throughput and p50/p99 latency (medians of the repeats) vs clients, raftkv and etcd."""
    pl = load_plot_module()
    colors = {"raftkv": pl.PALETTE[0], "etcd": pl.PALETTE[1]}
    throughput, latency = [], []
    for s in SYSTEMS:
        for mode in ("put", "mixed", "get"):
            pts = [
                (row["clients"], row[s])
                for row in rows
                if row["mode"] == mode and row[s]["ops"] is not None
            ]
            if not pts:
                continue
            marker = "circle" if mode == "put" else "square"
            throughput.append(
                pl.Series(f"{s} {mode}", [(c, d["ops"]) for c, d in pts], colors[s], marker=marker)
            )
            if mode != "put":
                continue
            for q, dashed in (("p50", True), ("p99", False)):
                latency.append(
                    pl.Series(
                        f"{s} put {q}",
                        [(c, d[q] / 1000.0) for c, d in pts],
                        colors[s],
                        dashed=dashed,
                    )
                )
    pl.write_benchmark_svg(path, title, throughput, latency)


def plot(rows: list[dict], title: str, path: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "summarize: matplotlib is not importable; no plot (run.sh installs it into "
            "benchmarks/.venv when it can)",
            file=sys.stderr,
        )
        return False
    colors = {"raftkv": "tab:blue", "etcd": "tab:orange"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for s in SYSTEMS:
        for mode, style, marker in (
            ("put", "-", "o"),
            ("mixed", "none", "s"),
            ("get", "none", "^"),
        ):
            pts = [
                (row["clients"], row[s])
                for row in rows
                if row["mode"] == mode and row[s]["ops"] is not None
            ]
            if not pts:
                continue
            xs = [c for c, _ in pts]
            label = f"{s} {mode}"
            ys = [d["ops"] for _, d in pts]
            lo = [d["ops"] - d["ops_min"] for _, d in pts]
            hi = [d["ops_max"] - d["ops"] for _, d in pts]
            ax1.errorbar(
                xs,
                ys,
                yerr=[lo, hi],
                color=colors[s],
                linestyle=style,
                marker=marker,
                capsize=3,
                label=label,
                markerfacecolor="white" if mode != "put" else colors[s],
            )
            p99 = [d["p99"] / 1000.0 for _, d in pts]
            p_lo = [(d["p99"] - min(d["p99_all"])) / 1000.0 for _, d in pts]
            p_hi = [(max(d["p99_all"]) - d["p99"]) / 1000.0 for _, d in pts]
            ax2.errorbar(
                xs,
                p99,
                yerr=[p_lo, p_hi],
                color=colors[s],
                linestyle=style,
                marker=marker,
                capsize=3,
                label=label,
                markerfacecolor="white" if mode != "put" else colors[s],
            )
    all_clients = sorted({row["clients"] for row in rows})
    for ax, ylabel in ((ax1, "throughput (ops/s)"), (ax2, "p99 latency (ms)")):
        ax.set_xscale("log")
        if all_clients:
            ax.set_xticks(all_clients)
            ax.set_xticklabels([str(c) for c in all_clients])
            ax.minorticks_off()
        ax.set_xlabel("closed-loop clients")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=8)
    ax1.set_ylim(bottom=0)
    ax2.set_yscale("log")
    ax1.set_title("throughput (median, min–max bars)")
    ax2.set_title("p99 latency (median, min–max bars)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("jsonl")
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    machine, runs = load(args.jsonl)
    if not runs:
        print(f"summarize: no runs in {args.jsonl}", file=sys.stderr)
        return 1
    rows, md = summarize(machine, runs)
    base = os.path.splitext(args.jsonl)[0]
    png = base + ".png"
    made = False
    if not args.no_plot:
        kind = "quick" if machine.get("quick") else "full"
        title = (
            f"raftkv vs etcd (3 nodes, loopback, {machine.get('value_size', 100)} B values), "
            f"{machine.get('date', '')} {kind} run"
        )
        plot_svg(rows, title, base + ".svg")
        md += f"\nGraph: [{os.path.basename(base)}.svg]({os.path.basename(base)}.svg)\n"
        if plot_reads_svg(rows, title + ": reads", base + "-reads.svg"):
            md += f"\nReads graph: [{os.path.basename(base)}-reads.svg]({os.path.basename(base)}-reads.svg)\n"
        made = plot(rows, title, png)
    if made:
        md += f"\nPlot: [{os.path.basename(png)}]({os.path.basename(png)})\n"
    md += f"\nRaw runs: `{os.path.basename(args.jsonl)}`\n"
    with open(base + ".md", "w") as f:
        f.write(md)
    print(md)
    print(f"wrote {base}.md" + (f" and {png}" if made else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
