#!/usr/bin/env python3
"""Measurement helpers for benchmarks/run.sh (standard library only, Linux /proc).

measure.py machine  --tmp DIR --raftkv PATH
    one {"kind":"machine",...} JSON line: date, kernel, CPU, cores, memory, etcd
    version, the raftkv build being measured, the file system of DIR and a short
    O_DSYNC write probe in DIR (the disk both systems write to)
measure.py quiet    [--max-pct P] [--wait S]
    samples the machine for 1 s (nothing of ours is running) and prints
    {"loadavg":[1m,5m,15m],"bg_pct":%busy,"waited_s":s}; with --wait, repeats
    every few seconds until bg_pct < P or S seconds have passed
measure.py run --out FILE --system S --case C --repeat R --noise JSON
               [--pids P1,P2,..] [--timeout T] [--log FILE] -- COMMAND...
    runs COMMAND (which prints one JSON line on stdout), bounded by T seconds
    (SIGINT, then SIGKILL to its process group), and appends that line to FILE,
    augmented with system, case, repeat and noise fields:
      noise.loadavg_before, noise.bg_pct_before  from `quiet` (before the run)
      noise.busy_pct       machine CPU busy over the command's wall time (/proc/stat)
      noise.steal_pct, noise.iowait_pct  same window
      noise.ours_cores     CPU of COMMAND and its reaped children (raftkv bench and
                           its `raftkv serve` processes; etcd-load) plus that of
                           --pids (the etcd members) over the window, in cores
      noise.other_cores    busy cores minus ours: kernel work and other people's jobs
    A run that fails still gets a line, with "ok": false and the reason.
measure.py strays --under DIR [--kill]
    finds (and stops) `raftkv serve` processes whose --data-dir is inside DIR:
    the safety net should `raftkv bench` die before stopping its servers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone

HZ = os.sysconf("SC_CLK_TCK")
NCPU = os.cpu_count() or 1


def cpu_times() -> dict[str, int]:
    """Machine-wide jiffies from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()
    names = ["user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"]
    vals = [int(x) for x in parts[1:9]]
    d = dict(zip(names, vals))
    # guest time is already counted in user/nice
    d["total"] = sum(vals)
    d["busy"] = d["total"] - d["idle"] - d["iowait"]
    return d


def pct(a: dict, b: dict, field: str) -> float:
    tot = b["total"] - a["total"]
    return 100.0 * (b[field] - a[field]) / tot if tot > 0 else 0.0


def pid_ticks(pids: list[int]) -> int:
    t = 0
    for p in pids:
        try:
            with open(f"/proc/{p}/stat") as f:
                rest = f.read().rsplit(")", 1)[1].split()
            t += int(rest[11]) + int(rest[12])  # utime, stime (fields 14, 15)
        except (OSError, IndexError, ValueError):
            pass
    return t


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def sample_bg(seconds: float = 1.0) -> float:
    a = cpu_times()
    time.sleep(seconds)
    return pct(a, cpu_times(), "busy")


def cmd_quiet(args) -> int:
    t0 = time.monotonic()
    la = loadavg()
    bg = sample_bg()
    warned = False
    while args.wait > 0 and bg >= args.max_pct and time.monotonic() - t0 < args.wait:
        if not warned:
            print(
                f"measure: machine {bg:.0f}% busy with other work; waiting up to "
                f"{args.wait:.0f} s for < {args.max_pct:.0f}%",
                file=sys.stderr,
                flush=True,
            )
            warned = True
        time.sleep(3)
        la = loadavg()
        bg = sample_bg()
    if warned and bg >= args.max_pct:
        print(
            f"measure: still {bg:.0f}% busy; measuring anyway (noise is recorded)",
            file=sys.stderr,
            flush=True,
        )
    print(
        json.dumps(
            {
                "loadavg": la,
                "bg_pct": round(bg, 1),
                "waited_s": round(time.monotonic() - t0 - 1.0, 1),
            }
        )
    )
    return 0


def first_line(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=20)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def dsync_probe(directory: str, writes: int = 300) -> float | None:
    """Mean microseconds per 4 KiB O_DSYNC overwrite of a preallocated file in directory."""
    path = os.path.join(directory, "dsync-probe")
    try:
        buf = b"\0" * 4096
        with open(path, "wb") as f:
            f.write(buf * writes)
            f.flush()
            os.fsync(f.fileno())
        fd = os.open(path, os.O_WRONLY | os.O_DSYNC)
        try:
            t0 = time.perf_counter()
            for i in range(writes):
                os.pwrite(fd, buf, i * 4096)
            dt = time.perf_counter() - t0
        finally:
            os.close(fd)
        return round(dt * 1e6 / writes, 1)
    except OSError:
        return None
    finally:
        try:
            os.unlink(path)
        except OSError:
            pass


def raftkv_build(raftkv: str) -> dict:
    """Which raftkv is measured: its path, package version and the extension's mtime/size."""
    info: dict = {"path": raftkv}
    py = None
    try:
        with open(raftkv, "rb") as f:
            head = f.readline().decode(errors="replace").strip()
        if head.startswith("#!"):
            py = head[2:].split()[0]
    except OSError:
        pass
    if py:
        code = (
            "import json, os, importlib.metadata as m, raftkv._raftkv as x; "
            "s = os.stat(x.__file__); "
            "print(json.dumps({'version': m.version('raftkv'), 'extension': x.__file__, "
            "'extension_mtime': int(s.st_mtime), 'extension_size': s.st_size}))"
        )
        line = first_line([py, "-c", code])
        try:
            info.update(json.loads(line or ""))
        except ValueError:
            pass
    return info


def cmd_machine(args) -> int:
    cpu = None
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem_gib = round(int(line.split()[1]) / 1048576, 1)
    except OSError:
        pass
    try:
        out = subprocess.run(["df", "-PT", args.tmp], capture_output=True, text=True, timeout=20)
        cols = out.stdout.splitlines()[1].split()
        fs = f"{cols[0]} {cols[1]}"
    except (OSError, subprocess.SubprocessError, IndexError):
        fs = None
    etcd = first_line(["etcd", "--version"])
    rec = {
        "kind": "machine",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "kernel": platform.release(),
        "cpu": cpu,
        "nproc": NCPU,
        "mem_gib": mem_gib,
        "etcd": etcd.split(":", 1)[1].strip() if etcd and ":" in etcd else etcd,
        "raftkv": raftkv_build(args.raftkv),
        "tmp": args.tmp,
        "tmp_fs": fs,
        "dsync_4k_us": dsync_probe(args.tmp),
        "loadavg": loadavg(),
    }
    rec.update(json.loads(args.extra or "{}"))
    print(json.dumps(rec))
    return 0


def cmd_run(args) -> int:
    cmd = args.command
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        print("measure run: no command", file=sys.stderr)
        return 2
    pids = [int(p) for p in args.pids.split(",") if p.strip()] if args.pids else []
    q = json.loads(args.noise) if args.noise else {}
    noise = {
        "loadavg_before": q.get("loadavg"),
        "bg_pct_before": q.get("bg_pct"),
        "quiet_wait_s": q.get("waited_s"),
    }
    rec: dict = {}
    err = None
    log = open(args.log, "ab") if args.log else None  # noqa: SIM115
    with tempfile.TemporaryFile() as out:
        a, pt0, w0 = cpu_times(), pid_ticks(pids), time.monotonic()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log if log else None,
                start_new_session=True,
            )
        except OSError as e:
            proc, err = None, f"cannot start {cmd[0]}: {e}"
        timed_out = threading.Event()

        def on_timeout():
            timed_out.set()
            try:  # SIGINT first: raftkv bench stops its servers on KeyboardInterrupt
                os.killpg(proc.pid, signal.SIGINT)
                time.sleep(20)
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass

        status, ru = 0, None
        interrupted = []
        if proc is not None:

            def on_signal(signum, frame):  # noqa: ARG001
                interrupted.append(signum)  # let the command stop (and clean up) by itself
                try:
                    os.killpg(proc.pid, signal.SIGINT)
                except (ProcessLookupError, PermissionError):
                    pass

            signal.signal(signal.SIGINT, on_signal)
            signal.signal(signal.SIGTERM, on_signal)
            timer = threading.Timer(args.timeout, on_timeout)
            timer.daemon = True
            timer.start()
            while True:
                try:
                    _, status, ru = os.wait4(proc.pid, 0)
                    break
                except InterruptedError:
                    continue
            timer.cancel()
            proc.returncode = os.waitstatus_to_exitcode(status)
        w1, pt1, b = time.monotonic(), pid_ticks(pids), cpu_times()
        out.seek(0)
        lines = [ln for ln in out.read().decode(errors="replace").splitlines() if ln.strip()]
    if log:
        log.close()
    if proc is not None:
        if interrupted:
            err = "interrupted"
        elif timed_out.is_set():
            err = f"timed out after {args.timeout:.0f} s"
        elif proc.returncode != 0:
            err = f"exit status {proc.returncode}"
        if lines:
            try:
                rec = json.loads(lines[-1])
            except ValueError:
                err = err or f"last stdout line is not JSON: {lines[-1][:200]!r}"
        elif err is None:
            err = "no output"
    wall = max(w1 - w0, 1e-6)
    ours = ((ru.ru_utime + ru.ru_stime) if ru else 0.0) + (pt1 - pt0) / HZ
    busy_cores = pct(a, b, "busy") / 100.0 * NCPU
    noise.update(
        {
            "wall_s": round(wall, 2),
            "busy_pct": round(pct(a, b, "busy"), 1),
            "steal_pct": round(pct(a, b, "steal"), 1),
            "iowait_pct": round(pct(a, b, "iowait"), 1),
            "ours_cores": round(ours / wall, 2),
            "other_cores": round(busy_cores - ours / wall, 2),
        }
    )
    rec = {"system": args.system, **{k: v for k, v in rec.items() if k != "system"}}
    rec.update(
        {
            "case": args.case,
            "repeat": args.repeat,
            "ok": err is None,
            "noise": noise,
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
    )
    if err:
        rec["error"] = err
    line = json.dumps(rec)
    with open(args.out, "a") as f:
        f.write(line + "\n")
    print(line, flush=True)
    if err is None:
        lat = rec.get("lat_us", {})
        print(
            f"[bench]   {rec.get('ops_per_s', 0):>9,.0f} ops/s  p50 {lat.get('p50', 0):,} us  "
            f"p99 {lat.get('p99', 0):,} us  errors {rec.get('errors')}  (other cores "
            f"{noise['other_cores']}, busy before {noise['bg_pct_before']}%)",
            file=sys.stderr,
            flush=True,
        )
    else:
        print(f"[bench]   FAILED: {err}", file=sys.stderr, flush=True)
    if interrupted:
        return 130
    return 0 if err is None else 1


def cmd_strays(args) -> int:
    """PIDs of `raftkv serve` processes whose --data-dir is under args.under; --kill stops them."""
    under = os.path.realpath(args.under).rstrip("/") + "/"
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open(f"/proc/{d}/cmdline", "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0")]
        except OSError:
            continue
        if "serve" not in argv or "--data-dir" not in argv:
            continue
        i = argv.index("--data-dir")
        if i + 1 < len(argv) and os.path.realpath(argv[i + 1]).startswith(under):
            found.append(int(d))
    for pid in found:
        print(f"measure: stopping leftover raftkv server pid {pid}", file=sys.stderr)
        if args.kill:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
    if args.kill and found:
        deadline = time.monotonic() + 10
        for pid in found:
            while time.monotonic() < deadline and os.path.exists(f"/proc/{pid}"):
                time.sleep(0.1)
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("machine")
    m.add_argument("--tmp", required=True)
    m.add_argument("--raftkv", required=True)
    m.add_argument("--extra", help="JSON object merged into the line")
    m.set_defaults(func=cmd_machine)
    q = sub.add_parser("quiet")
    q.add_argument("--max-pct", type=float, default=20.0)
    q.add_argument("--wait", type=float, default=0.0)
    q.set_defaults(func=cmd_quiet)
    r = sub.add_parser("run")
    r.add_argument("--out", required=True)
    r.add_argument("--system", required=True)
    r.add_argument("--case", required=True)
    r.add_argument("--repeat", type=int, required=True)
    r.add_argument("--noise", help="JSON from `quiet`")
    r.add_argument("--pids", help="extra PIDs whose CPU counts as ours (the etcd members)")
    r.add_argument("--timeout", type=float, default=300.0)
    r.add_argument("--log", help="append the command's stderr here")
    r.add_argument("command", nargs=argparse.REMAINDER)
    r.set_defaults(func=cmd_run)
    k = sub.add_parser("strays")
    k.add_argument("--under", required=True)
    k.add_argument("--kill", action="store_true")
    k.set_defaults(func=cmd_strays)
    args = p.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
