"""Memory after load, raftkv vs etcd: RssAnon and RssFile per node with N keys, and after a restart.

    python benchmarks/memory.py [--keys 1000000] [--clients 256] [--repeats 1]
                                [--systems raftkv,etcd] [--raftkv-args "--data-bytes-max N"]
    python benchmarks/memory.py --summarize results/memory-A.jsonl results/memory-B.jsonl

For each repeat and system (the order alternates from repeat to repeat), a fresh 3-node cluster
in a temp dir on disk (never tmpfs):

- raftkv: 3 `raftkv serve` processes (LMDB log, one tokio worker each, as `raftkv bench` starts
  them), plus whatever `--raftkv-args` adds to every node's command line (e.g. the KV state a
  branch offers); loaded with `raftkv.bench`'s preload (mode get writes every key once);
- etcd: 3 members of Debian's etcd with default flags (every put fsynced) except
  `--quota-backend-bytes` (8 GiB, so that 10,000,000 keys fit), plus `--etcd-args`; loaded with
  `etcd-load --mode get`, whose prefill writes every key once.

Both write the same data: keys k000000 .. k(N-1), one 100-byte value each (`--value-size`),
`--clients` closed-loop writers. Then per node, from /proc/PID/status: RssAnon (heap: what the
process holds itself), RssFile (file pages mapped into it: LMDB's or bbolt's map, the binary),
VmRSS (their sum plus shared memory), and the data dir's size. Then all three are killed with
SIGKILL and started again on their data dirs, the time until a linearizable get of k000000
answers is measured (election included), and RSS is read again, at once and `--settle` seconds
later.

With `--catch-up SECONDS` (raftkv only), between the load and the restart: one follower is
killed with SIGKILL, the cluster takes puts (overwrites of the loaded keys) for that many
seconds, so the leader compacts its log far past the follower's last entry, and the follower is
started again: it can only catch up by a whole-state snapshot. Recorded: the seconds until its
applied index reaches the leader's commit index of that moment, the peak RssAnon of each node
while it does (read every 0.2 s), and RssAnon `--settle` seconds after.

One JSON line per (system, repeat) goes to `--out` (default
benchmarks/results/memory-STAMP.jsonl), and a Markdown table to the same name with .md.
Needs the raftkv package (for raftkv), and `etcd` plus benchmarks/etcd-load built (for etcd).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ETCD_LOAD = os.path.join(HERE, "etcd-load", "target", "release", "etcd-load")
FIELDS = ("RssAnon", "RssFile", "VmRSS")


def mem(pid: int) -> dict[str, float]:
    """RssAnon, RssFile and VmRSS of process `pid`, in MiB."""
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name in FIELDS:
                out[name] = int(rest.split()[0]) / 1024
    return out


def dir_mib(path: str) -> float:
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total / (1 << 20)


def on_disk_tmp(base: str | None) -> tempfile.TemporaryDirectory:
    for d in [base] if base else ["/var/tmp", "/tmp", HERE]:
        out = subprocess.run(["stat", "-f", "-c", "%T", d], capture_output=True, text=True)
        if out.stdout.strip() != "tmpfs":
            return tempfile.TemporaryDirectory(prefix="raftkv-memory-", dir=d)
    raise SystemExit(f"{base} is tmpfs: data dirs must be on a disk")


def spawn(argv: list[str], log: str) -> subprocess.Popen:
    with open(log, "ab") as f:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def kill_all(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
    for p in procs:
        p.wait()


class Raftkv:
    name = "raftkv"

    def __init__(self, tmp: str, extra: list[str]):
        from raftkv.procs import start_servers

        self.dirs = [os.path.join(tmp, f"node{i}") for i in (1, 2, 3)]
        self.procs, self.endpoints = start_servers(3, tmp, "tokio", workers=1, extra_args=extra)
        self.logs = [os.path.join(tmp, f"node{i}.log") for i in (1, 2, 3)]

    def wait_serving(self, timeout: float) -> None:
        from raftkv.procs import wait_serving

        wait_serving(self.endpoints, self.procs, timeout=timeout)

    def load(self, keys: int, clients: int, value_size: int) -> None:
        import raftkv

        r = raftkv.bench(
            self.endpoints,
            clients=clients,
            seconds=0.2,
            mode="get",
            warmup=0.0,
            keyspace=keys,
            value_size=value_size,
        )
        if r.get("errors"):
            raise SystemExit(f"raftkv load had errors: {r}")

    def get_answers(self) -> bool:
        import raftkv

        try:
            return raftkv.Clerk(self.endpoints, timeout=0.5).get("k000000") is not None
        except raftkv.Error:
            return False

    def status(self, i: int) -> dict | None:
        import raftkv

        try:
            return dict(raftkv.Clerk(self.endpoints, timeout=0.5).server_status(self.endpoints[i]))
        except raftkv.Error:
            return None

    def catch_up(self, seconds: float, clients: int, keys: int, value_size: int) -> dict:
        """Kills a follower, writes for `seconds`, starts it again and measures its catch-up."""
        import raftkv

        roles = [(self.status(i) or {}).get("role") for i in range(3)]
        f = next(i for i, r in enumerate(roles) if r != "leader")
        self.procs[f].send_signal(signal.SIGKILL)
        self.procs[f].wait()
        live = [e for i, e in enumerate(self.endpoints) if i != f]
        r = raftkv.bench(
            live,
            clients=clients,
            seconds=seconds,
            mode="put",
            warmup=0.0,
            keyspace=keys,
            value_size=value_size,
        )
        target = max((self.status(i) or {}).get("commit_index", 0) for i in range(3) if i != f)
        self.procs[f] = spawn(self.procs[f].args, self.logs[f])
        t0 = time.monotonic()
        peak = [0.0, 0.0, 0.0]
        while True:
            for i in range(3):
                peak[i] = max(peak[i], mem(self.procs[i].pid)["RssAnon"])
            st = self.status(f)
            if st and st.get("applied_index", 0) >= target:
                break
            if time.monotonic() - t0 > 1800:
                raise SystemExit(f"node {f + 1} did not catch up within 1800 s")
            if self.procs[f].poll() is not None:
                raise SystemExit(f"node {f + 1} exited while catching up; see {self.logs[f]}")
            time.sleep(0.2)
        took = time.monotonic() - t0
        st = self.status(f) or {}
        return {
            "follower": f + 1,
            "puts": r.get("ops", 0),
            "target_index": target,
            "snapshot_index": st.get("snapshot_index"),
            "catch_up_s": took,
            "peak_rss_anon_mib": peak,
        }


class Etcd:
    name = "etcd"

    def __init__(self, tmp: str, extra: list[str]):
        from raftkv.procs import free_ports

        ports = free_ports(6)
        cluster = ",".join(f"m{i + 1}=http://127.0.0.1:{ports[3 + i]}" for i in range(3))
        self.endpoints = [f"http://127.0.0.1:{ports[i]}" for i in range(3)]
        self.dirs = [os.path.join(tmp, f"m{i + 1}") for i in range(3)]
        self.logs = [os.path.join(tmp, f"m{i + 1}.log") for i in range(3)]
        self.argvs = []
        for i in range(3):
            cp, pp = self.endpoints[i], f"http://127.0.0.1:{ports[3 + i]}"
            self.argvs.append(
                [
                    "etcd",
                    "--name",
                    f"m{i + 1}",
                    "--data-dir",
                    self.dirs[i],
                    "--listen-client-urls",
                    cp,
                    "--advertise-client-urls",
                    cp,
                    "--listen-peer-urls",
                    pp,
                    "--initial-advertise-peer-urls",
                    pp,
                    "--initial-cluster",
                    cluster,
                    "--initial-cluster-token",
                    f"raftkv-mem-{os.getpid()}",
                    "--initial-cluster-state",
                    "new",
                    "--quota-backend-bytes",
                    str(8 << 30),
                    *extra,
                ]
            )
        env_clean = {k: v for k, v in os.environ.items() if not k.startswith("ETCD_")}
        self.env = env_clean
        self.procs = [self._start(i) for i in range(3)]

    def _start(self, i: int) -> subprocess.Popen:
        with open(self.logs[i], "ab") as f:
            return subprocess.Popen(
                self.argvs[i],
                stdin=subprocess.DEVNULL,
                stdout=f,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )

    def _range(self, endpoint: str) -> dict:
        body = json.dumps({"key": base64.b64encode(b"k000000").decode()}).encode()
        req = urllib.request.Request(f"{endpoint}/v3/kv/range", data=body, method="POST")
        with urllib.request.urlopen(req, timeout=0.5) as r:
            return json.loads(r.read())

    def wait_serving(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for e in self.endpoints:
                try:
                    self._range(e)
                    return
                except OSError:
                    pass
            if any(p.poll() is not None for p in self.procs):
                raise SystemExit(f"an etcd member exited; see {os.path.dirname(self.logs[0])}")
            time.sleep(0.1)
        raise SystemExit(f"etcd did not serve within {timeout} s")

    def load(self, keys: int, clients: int, value_size: int) -> None:
        out = subprocess.run(
            [
                ETCD_LOAD,
                "--endpoints",
                ",".join(self.endpoints),
                "--clients",
                str(clients),
                "--seconds",
                "0.2",
                "--warmup",
                "0",
                "--mode",
                "get",
                "--keyspace",
                str(keys),
                "--value-size",
                str(value_size),
                # room for the prefill at >= 100 puts/s, and never less than 10 minutes
                "--max-seconds",
                str(max(600, keys // 100)),
                # etcd stalls for seconds now and then while its bbolt file grows: a put of the
                # prefill that waits 5 s (the default) would end the load
                "--op-timeout-ms",
                "60000",
            ],
            capture_output=True,
            text=True,
        )
        if out.returncode != 0:
            raise SystemExit(f"etcd-load failed: {out.stderr[-2000:]}")

    def get_answers(self) -> bool:
        for e in self.endpoints:
            try:
                if self._range(e).get("kvs"):
                    return True
            except OSError:
                pass
        return False


def restart_all(c) -> float:
    """Kills every node with SIGKILL, starts them again, and returns the seconds until a
    linearizable get answers."""
    kill_all(c.procs)
    t0 = time.monotonic()
    if isinstance(c, Etcd):
        c.procs = [c._start(i) for i in range(3)]
    else:
        c.procs = [spawn(p.args, log) for p, log in zip(c.procs, c.logs)]
    while not c.get_answers():
        if time.monotonic() - t0 > 600:
            raise SystemExit(f"{c.name} did not serve within 600 s of a restart")
        time.sleep(0.01)
    return time.monotonic() - t0


def fmt_nodes(nodes: list[dict], field: str) -> str:
    return ", ".join(f"{n[field]:.0f}" for n in nodes)


def one(system: str, args, repeat: int) -> dict:
    tmp = on_disk_tmp(args.dir)
    extra = shlex.split(args.raftkv_args if system == "raftkv" else args.etcd_args)
    c = Raftkv(tmp.name, extra) if system == "raftkv" else Etcd(tmp.name, extra)
    rec: dict = {
        "system": system,
        "repeat": repeat,
        "keys": args.keys,
        "clients": args.clients,
        "value_size": args.value_size,
        "extra_args": extra,
    }
    try:
        c.wait_serving(60.0)
        print(f"[{system}] loading {args.keys:,} keys with {args.clients} clients ...", flush=True)
        t = time.monotonic()
        c.load(args.keys, args.clients, args.value_size)
        took = time.monotonic() - t
        time.sleep(args.settle)
        rec["load_s"] = took
        rec["loaded"] = [mem(p.pid) for p in c.procs]
        rec["data_dir_mib"] = [dir_mib(d) for d in c.dirs]
        print(
            f"[{system}] loaded in {took:.1f} s ({args.keys / took:,.0f} puts/s); per node "
            f"RssAnon {fmt_nodes(rec['loaded'], 'RssAnon')} MiB, RssFile "
            f"{fmt_nodes(rec['loaded'], 'RssFile')} MiB; data dir "
            f"{', '.join(f'{d:.0f}' for d in rec['data_dir_mib'])} MiB",
            flush=True,
        )
        if args.catch_up and isinstance(c, Raftkv):
            cu = c.catch_up(args.catch_up, args.clients, args.keys, args.value_size)
            time.sleep(args.settle)
            cu["settled"] = [mem(p.pid) for p in c.procs]
            rec["catch_up"] = cu
            print(
                f"[{system}] follower n{cu['follower']} killed, {cu['puts']:,} puts, started "
                f"again: caught up to {cu['target_index']} (its snapshot at "
                f"{cu['snapshot_index']}) in {cu['catch_up_s']:.1f} s; peak RssAnon "
                f"{', '.join(f'{x:.0f}' for x in cu['peak_rss_anon_mib'])} MiB, "
                f"{args.settle:g} s later {fmt_nodes(cu['settled'], 'RssAnon')} MiB",
                flush=True,
            )
        rec["restart_s"] = restart_all(c)
        rec["restarted"] = [mem(p.pid) for p in c.procs]
        time.sleep(args.settle)
        rec["restarted_settled"] = [mem(p.pid) for p in c.procs]
        print(
            f"[{system}] SIGKILL all + start again: a linearizable get answered after "
            f"{rec['restart_s']:.3f} s; per node RssAnon "
            f"{fmt_nodes(rec['restarted'], 'RssAnon')} MiB, RssFile "
            f"{fmt_nodes(rec['restarted'], 'RssFile')} MiB; {args.settle:g} s later RssAnon "
            f"{fmt_nodes(rec['restarted_settled'], 'RssAnon')}, RssFile "
            f"{fmt_nodes(rec['restarted_settled'], 'RssFile')} MiB",
            flush=True,
        )
        rec["ok"] = True
    finally:
        if isinstance(c, Raftkv):
            from raftkv.procs import stop_servers

            stop_servers(c.procs)
        else:
            kill_all(c.procs)
        tmp.cleanup()
    return rec


def span(recs: list[dict], phase: str, field: str) -> str:
    xs = [n[field] for r in recs for n in r[phase]]
    return f"{min(xs):,.0f}–{max(xs):,.0f}" if xs else "-"


def summary(recs: list[dict]) -> str:
    lines = [
        "| system | keys | runs | load puts/s | after load RssAnon MiB | after load RssFile MiB "
        "| data dir MiB | restart to serving s | after restart RssAnon MiB "
        "| after restart RssFile MiB | settled RssAnon MiB | settled RssFile MiB |",
        "|---|---:|---:|---:|---|---|---|---:|---|---|---|---|",
    ]
    for system in ("raftkv", "etcd"):
        rs = [r for r in recs if r["system"] == system and r.get("ok")]
        if not rs:
            continue
        rate = statistics.median(r["keys"] / r["load_s"] for r in rs)
        dd = [d for r in rs for d in r["data_dir_mib"]]
        restarts = ", ".join(f"{r['restart_s']:.2f}" for r in rs)
        lines.append(
            f"| {system} | {rs[0]['keys']:,} | {len(rs)} | {rate:,.0f} "
            f"| {span(rs, 'loaded', 'RssAnon')} | {span(rs, 'loaded', 'RssFile')} "
            f"| {min(dd):,.0f}–{max(dd):,.0f} "
            f"| {restarts} "
            f"| {span(rs, 'restarted', 'RssAnon')} | {span(rs, 'restarted', 'RssFile')} "
            f"| {span(rs, 'restarted_settled', 'RssAnon')} "
            f"| {span(rs, 'restarted_settled', 'RssFile')} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--systems", default="raftkv,etcd", help="comma-separated: raftkv, etcd")
    ap.add_argument("--raftkv-args", default="", help="added to every `raftkv serve` command line")
    ap.add_argument("--etcd-args", default="", help="added to every etcd command line")
    ap.add_argument(
        "--settle",
        type=float,
        default=5.0,
        help="seconds to wait after the load and after the restart before reading RSS",
    )
    ap.add_argument(
        "--catch-up",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="raftkv: kill a follower, write for SECONDS, start it again and measure its "
        "catch-up by a whole-state snapshot (0: skip)",
    )
    ap.add_argument("--dir", default=None, help="where the data dirs go (default: a temp dir)")
    ap.add_argument("--out", default=None, help="JSON lines file (default results/memory-STAMP)")
    ap.add_argument(
        "--summarize",
        nargs="+",
        metavar="JSONL",
        help="measure nothing: print the table of these results files' runs together",
    )
    args = ap.parse_args()
    if args.summarize:
        recs = []
        for path in args.summarize:
            with open(path) as f:
                recs += [r for r in map(json.loads, filter(str.strip, f)) if "system" in r]
        for keys in sorted({r["keys"] for r in recs}):
            print(summary([r for r in recs if r["keys"] == keys]))
        return 0
    systems = [s for s in args.systems.split(",") if s]
    if not systems or any(s not in ("raftkv", "etcd") for s in systems):
        ap.error("--systems takes raftkv and/or etcd")
    if args.catch_up < 0:
        ap.error("--catch-up takes seconds >= 0")
    if args.keys < 1 or args.clients < 1 or args.repeats < 1 or args.value_size < 1:
        ap.error("--keys, --clients, --repeats and --value-size must be positive")
    if "etcd" in systems and not os.access(ETCD_LOAD, os.X_OK):
        ap.error(f"build {ETCD_LOAD} first: cargo build --release in benchmarks/etcd-load")
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    out = args.out or os.path.join(HERE, "results", f"memory-{stamp}.jsonl")
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    head = {
        "kind": "machine",
        "date": stamp,
        "keys": args.keys,
        "clients": args.clients,
        "value_size": args.value_size,
        "systems": systems,
        "raftkv_args": args.raftkv_args,
        "etcd_args": args.etcd_args,
        "loadavg_before": load,
    }
    recs = []
    with open(out, "w") as f:
        f.write(json.dumps(head) + "\n")
        for r in range(1, args.repeats + 1):
            order = systems if r % 2 == 1 else systems[::-1]
            for s in order:
                rec = one(s, args, r)
                with open("/proc/loadavg") as la:
                    rec["loadavg_after"] = la.read().split()[:3]
                f.write(json.dumps(rec) + "\n")
                f.flush()
                recs.append(rec)
    md = summary(recs)
    with open(os.path.splitext(out)[0] + ".md", "w") as f:
        f.write(
            f"memory.py {' '.join(sys.argv[1:])} ({stamp}, load average before "
            f"{' '.join(load)})\n\n{md}"
        )
    print(md)
    print(f"wrote {out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
