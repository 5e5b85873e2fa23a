"""Restart of a node holding many keys: how long until it serves again, and RSS per node.

    python benchmarks/restart.py [--keys 1000000] [--clients 256] [--repeats 3]
                                 [--state memory|lmdb]

Starts 3 `raftkv serve` processes (LMDB storage, data dirs in a temp dir on disk; the KV state
in memory or, with `--state lmdb`, in LMDB too), writes every key
k000000.. once (100-byte values; `raftkv.bench`'s preload, 256 closed-loop Rust Clerks), then
per repeat:

- follower: kill -9 a follower, start it again, and time (from the process start) its first
  status answer (open LMDB, restore the snapshot, replay the log) and the moment it has applied
  everything the leader had committed when it was killed;
- leader: the same for the leader (the other two elect a new one meanwhile);
- cluster: kill -9 all three, start them again, and time until a linearizable get answers.

RSS of every node (VmRSS, and its anonymous and file-backed parts: RssAnon, RssFile) is
printed after the load and after each restart; the data dirs' size after the load. Issue 7's
target: a node holding 1,000,000 keys serves again in <= 1 s. Issue 20's: with the state in
LMDB, RssAnon stays <= 256 MiB per node.
"""

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

# One reading of /proc and of a data dir's size for both memory benchmarks (benchmarks/ is
# on sys.path: run as a script).
from memory import dir_mib, mem

import raftkv
from raftkv.procs import start_servers, stop_servers, wait_serving


def memory(procs) -> str:
    """Every node's RSS and its anonymous and file-backed parts, in MiB."""
    return "; ".join(f"n{i + 1} {rss(p.pid)}" for i, p in enumerate(procs))


def rss(pid: int) -> str:
    m = mem(pid)
    return f"RSS {m['VmRSS']:.0f} (anon {m['RssAnon']:.0f}, file {m['RssFile']:.0f})"


def status(clerk: raftkv.Clerk, addr: str):
    try:
        return clerk.server_status(addr)
    except raftkv.Error:
        return None


def leader_index(clerk, endpoints) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for i, a in enumerate(endpoints):
            s = status(clerk, a)
            if s and s["role"] == "leader":
                return i
        time.sleep(0.05)
    raise SystemExit("no leader within 30 s")


def restart(procs, i):
    """Starts node i again with the arguments it had (replacing procs[i]); returns the start
    time."""
    old = procs[i]
    t0 = time.monotonic()
    p = subprocess.Popen(
        old.args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    procs[i] = p
    return t0


def kill(procs, i):
    procs[i].send_signal(signal.SIGKILL)
    procs[i].wait()


def one_node(procs, endpoints, clerk, i, what):
    leader = leader_index(clerk, endpoints)
    committed = status(clerk, endpoints[leader])["commit_index"]
    kill(procs, i)
    t0 = restart(procs, i)
    first = caught_up = None
    deadline = t0 + 120
    while time.monotonic() < deadline:
        s = status(clerk, endpoints[i])
        now = time.monotonic()
        if s is not None:
            first = first or now - t0
            if s["applied_index"] >= committed:
                caught_up = now - t0
                break
        time.sleep(0.002)
    if caught_up is None:
        raise SystemExit(f"node {i + 1} did not catch up within 120 s (first answer: {first})")
    print(
        f"  {what} (node {i + 1}): first status answer {first:.3f} s, applied the leader's "
        f"commit index {committed} at {caught_up:.3f} s; {rss(procs[i].pid)} MiB",
        flush=True,
    )
    return caught_up


def whole_cluster(procs, endpoints):
    for i in range(len(procs)):
        kill(procs, i)
    t0 = time.monotonic()
    for i in range(len(procs)):
        restart(procs, i)
    reader = raftkv.Clerk(endpoints, timeout=0.5)
    while True:
        try:
            reader.get("k000000")
            break
        except raftkv.Error:
            if time.monotonic() - t0 > 120:
                raise
    took = time.monotonic() - t0
    print(
        f"  cluster: a linearizable get answered {took:.3f} s after all three were started "
        f"again; MiB: {memory(procs)}",
        flush=True,
    )
    return took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--clients", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=None, help="where the data dirs go (default: a temp dir)")
    ap.add_argument(
        "--state", choices=("memory", "lmdb"), default="memory", help="`raftkv serve --state`"
    )
    args = ap.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="raftkv-restart-", dir=args.dir)
    # One tokio worker per server, as `raftkv bench` starts them (the nodes share the machine).
    procs, endpoints = start_servers(3, tmp.name, "tokio", workers=1, state=args.state)
    try:
        wait_serving(endpoints, procs, timeout=30.0, log_dir=tmp.name)
        clerk = raftkv.Clerk(endpoints, timeout=2.0)
        print(
            f"state {args.state}: loading {args.keys:,} keys with {args.clients} clients ...",
            flush=True,
        )
        t = time.monotonic()
        # The get mode writes the whole keyspace first (keys k000000.., 100-byte values).
        raftkv.bench(
            endpoints, clients=args.clients, seconds=0.2, mode="get", warmup=0.0, keyspace=args.keys
        )
        load = time.monotonic() - t
        size = ", ".join(f"{dir_mib(os.path.join(tmp.name, f'node{i}')):.0f}" for i in range(1, 4))
        print(
            f"loaded in {load:.1f} s ({args.keys / load:,.0f} puts/s); data dir per node {size} "
            f"MiB; MiB: {memory(procs)}",
            flush=True,
        )
        followers, leaders, clusters = [], [], []
        for r in range(args.repeats):
            print(f"repeat {r + 1}:", flush=True)
            leader = leader_index(clerk, endpoints)
            follower = (leader + 1) % 3
            followers.append(one_node(procs, endpoints, clerk, follower, "follower"))
            leaders.append(
                one_node(procs, endpoints, clerk, leader_index(clerk, endpoints), "leader")
            )
            clusters.append(whole_cluster(procs, endpoints))
        print(
            f"median over {args.repeats}: follower caught up {statistics.median(followers):.3f} s"
            f", leader caught up {statistics.median(leaders):.3f} s, whole cluster serving "
            f"{statistics.median(clusters):.3f} s",
            flush=True,
        )
        return 0
    finally:
        stop_servers(procs)
        tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
