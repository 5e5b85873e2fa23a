"""The ``raftkv`` command line: serve, get, put, check, demo, bench.

Run ``raftkv COMMAND --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import raftkv

ADDRESSES_HELP = (
    "A node's client address is the host of its peer address with port + 1000 "
    "(--client-port-offset), unless --client-addrs names them."
)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

class UsageError(Exception):
    """Bad command-line input: one line on stderr, exit 2."""


def _parse_id_map(text: str, what: str) -> dict[int, str]:
    """``1=host:port,2=host:port`` -> {1: "host:port", ...}."""
    out: dict[int, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        ident, sep, addr = part.partition("=")
        if not sep or not ident.strip().isdigit() or not addr.strip():
            raise UsageError(f"bad {what} entry {part!r}: expected ID=HOST:PORT")
        out[int(ident)] = addr.strip()
    if not out:
        raise UsageError(f"{what} is empty")
    return out


def _endpoints(text: str | None) -> list[str]:
    text = text or os.environ.get("RAFTKV_ENDPOINTS", "")
    eps = [e.strip() for e in text.split(",") if e.strip()]
    if not eps:
        raise UsageError("no endpoints: give --endpoints HOST:PORT[,HOST:PORT...] "
                         "(client addresses) or set RAFTKV_ENDPOINTS")
    return eps


def _err(msg: str) -> None:
    print(f"raftkv: {msg}", file=sys.stderr, flush=True)


def _free_ports(n: int) -> list[int]:
    socks, ports = [], []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            ports.append(s.getsockname()[1])
    finally:
        for s in socks:
            s.close()
    return ports


# ----------------------------------------------------------------------------------------------
# serve
# ----------------------------------------------------------------------------------------------

def cmd_serve(args) -> int:
    peers = _parse_id_map(args.peers, "--peers")
    client_addrs = _parse_id_map(args.client_addrs, "--client-addrs") if args.client_addrs else None
    if args.id not in peers:
        raise UsageError(f"--id {args.id} is not among --peers ({sorted(peers)})")
    if args.storage == "lmdb" and not args.data_dir:
        raise UsageError("--data-dir is required with --storage lmdb")
    if args.workers is not None:
        # Read once, when the runtime starts: nothing has started it yet in this process.
        os.environ["RAFTKV_TOKIO_WORKERS"] = str(args.workers)
    try:
        node = raftkv.Node(id=args.id, peers=peers, data_dir=args.data_dir, storage=args.storage,
                           runtime=args.runtime, client_addrs=client_addrs,
                           client_port_offset=args.client_port_offset,
                           snapshot_threshold=args.snapshot_threshold)
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None

    stop = threading.Event()

    def on_signal(signum, frame):  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    node.start()
    print(f"raftkv: node {args.id} serving: raft {node.peer_addr}, clients {node.client_addr}"
          f" ({args.storage}{', ' + args.data_dir if args.data_dir else ''})",
          file=sys.stderr, flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        node.stop()
        print(f"raftkv: node {args.id} stopped", file=sys.stderr, flush=True)
    return 0


# ----------------------------------------------------------------------------------------------
# get / put
# ----------------------------------------------------------------------------------------------

def _write_value(value: bytes) -> None:
    out = sys.stdout.buffer
    out.write(value)
    out.write(b"\n")
    out.flush()


def cmd_get(args) -> int:
    clerk = raftkv.Clerk(_endpoints(args.endpoints), timeout=args.timeout)
    try:
        value, version = clerk.get(args.key)
    except raftkv.KeyNotFound:
        _err(f"no such key: {args.key}")
        return 1
    _write_value(value)
    if args.version:
        print(f"version {version}", file=sys.stderr)
    return 0


def cmd_put(args) -> int:
    clerk = raftkv.Clerk(_endpoints(args.endpoints), timeout=args.timeout)
    try:
        version = clerk.put(args.key, args.value, version=args.version)
    except raftkv.VersionMismatch as e:
        _err(str(e))
        return 1
    except raftkv.KeyNotFound:
        _err(f"no such key: {args.key} (a conditional put with --version > 0 needs the key)")
        return 1
    print(version)
    return 0


def cmd_delete(args) -> int:
    clerk = raftkv.Clerk(_endpoints(args.endpoints), timeout=args.timeout)
    try:
        clerk.delete(args.key)
    except raftkv.KeyNotFound:
        _err(f"no such key: {args.key}")
        return 1
    return 0


# ----------------------------------------------------------------------------------------------
# check
# ----------------------------------------------------------------------------------------------

def _guess_format(path: str) -> str:
    if path.endswith(".log"):
        return "jepsen-etcd"
    if path.endswith(".txt"):
        return "porcupine-kv"
    return "json"


def cmd_check(args) -> int:
    fmt = args.format or _guess_format(args.history)
    try:
        result = raftkv.check_file(args.history, format=fmt, model=args.model,
                                   timeout=args.timeout, partition=not args.no_partition)
    except (raftkv.HistoryError, ValueError, OSError, raftkv.Error) as e:
        msg = str(e).replace("\n", " ")
        if isinstance(e, OSError):
            msg = e.strerror or msg
        _err(f"cannot check {args.history}: {msg}")
        return 2
    if result.ok is True:
        print(f"linearizable ({result.ops} ops, {result.partitions} partitions, "
              f"model {result.model})")
        code = 0
    elif result.ok is False:
        print(f"NOT linearizable ({result.ops} ops, {result.partitions} partitions, "
              f"model {result.model})")
        code = 1
    else:
        print(f"unknown: {result.reason or 'undecided'} ({result.ops} ops, model {result.model})")
        code = 2
    if args.html:
        try:
            result.visualize(args.html)
        except OSError as e:
            _err(f"cannot write {args.html}: {e.strerror or e}")
            return 2
        print(f"visualization: {args.html}")
    return code


# ----------------------------------------------------------------------------------------------
# demo
# ----------------------------------------------------------------------------------------------

class _Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.ops = 0
        self.errors = 0
        self.by_kind: dict[str, int] = {}

    def add(self, ok: bool, kind: str | None = None):
        with self.lock:
            self.ops += 1
            if not ok:
                self.errors += 1
                if kind:
                    self.by_kind[kind] = self.by_kind.get(kind, 0) + 1


def _demo_client(cluster, history, stats, stop, seed, keys):
    rnd = random.Random(seed)
    clerk = cluster.clerk(history=history, timeout=3.0)
    n = 0
    while not stop.is_set():
        n += 1
        key = rnd.choice(keys)
        r = rnd.random()
        try:
            if r < 0.4:
                clerk.get(key)
            elif r < 0.65:
                clerk.put(key, f"c{seed}-{n}")
            elif r < 0.85:
                clerk.append(key, f"[{seed}.{n}]")
            elif r < 0.95:
                try:
                    _, v = clerk.get(key)
                except raftkv.KeyNotFound:
                    v = 0
                stats.add(True)
                clerk.put(key, f"cas{seed}-{n}", version=v)
            else:
                clerk.delete(key)
            stats.add(True)
        except (raftkv.KeyNotFound, raftkv.VersionMismatch):
            stats.add(True)  # definite answers
        except raftkv.Error as e:
            stats.add(False, type(e).__name__)
            time.sleep(0.05)


def _status_line(cluster, down: set[int]) -> str:
    parts = []
    for i in range(len(cluster)):
        if i in down:
            parts.append(f"n{i}: DOWN      ")
            continue
        try:
            s = cluster.status(i)
            role = {"leader": "L", "follower": "F", "candidate": "C"}.get(s["role"], "P")
            parts.append(f"n{i}: {role} t{s['term']:<3} c{s['commit_index']:<5}")
        except raftkv.Error:
            parts.append(f"n{i}: ?         ")
    return " | ".join(parts)


def cmd_demo(args) -> int:
    tty = sys.stderr.isatty()
    out = args.html
    seconds = args.seconds
    print(f"raftkv demo: 3 nodes on LMDB (temp dir), {args.clients} clients, "
          f"~{seconds:.0f} s of crashes, restarts and partitions", file=sys.stderr, flush=True)
    history = raftkv.History()
    stats = _Stats()
    stop = threading.Event()
    keys = [f"k{i}" for i in range(args.keys)]
    leader_changes = 0
    events: list[str] = []
    t0 = time.monotonic()
    with raftkv.LocalCluster(n=3, storage="lmdb", seed=args.seed) as cluster:
        leader = cluster.wait_leader(timeout=10.0)
        last_leader = leader
        threads = [threading.Thread(target=_demo_client, daemon=True,
                                    args=(cluster, history, stats, stop, c, keys))
                   for c in range(args.clients)]
        for t in threads:
            t.start()
        down: set[int] = set()
        # the nemesis schedule: (time offset as a fraction of the run, action)
        plan = [(0.10, "crash-leader"), (0.25, "restart"), (0.35, "partition-leader"),
                (0.55, "heal"), (0.62, "isolate-follower"), (0.78, "heal"),
                (0.82, "crash-follower"), (0.92, "restart")]
        step = 0
        crashed: int | None = None
        last_print = 0.0
        end = t0 + seconds
        try:
            while time.monotonic() < end:
                now = time.monotonic()
                frac = (now - t0) / seconds
                while step < len(plan) and frac >= plan[step][0]:
                    action = plan[step][1]
                    step += 1
                    cur = cluster.leader()
                    if action == "crash-leader" and cur is not None:
                        cluster.crash(cur)
                        crashed = cur
                        down.add(cur)
                        events.append(f"{now - t0:5.1f}s crash n{cur} (leader)")
                    elif action == "crash-follower":
                        victim = next(i for i in range(3) if i != cur)
                        cluster.crash(victim)
                        crashed = victim
                        down.add(victim)
                        events.append(f"{now - t0:5.1f}s crash n{victim} (follower)")
                    elif action == "restart" and crashed is not None:
                        cluster.restart(crashed)
                        down.discard(crashed)
                        events.append(f"{now - t0:5.1f}s restart n{crashed}")
                        crashed = None
                    elif action == "partition-leader" and cur is not None:
                        others = [i for i in range(3) if i != cur]
                        cluster.partition([cur], others)
                        events.append(f"{now - t0:5.1f}s partition [n{cur}] | "
                                      f"[{', '.join(f'n{i}' for i in others)}]")
                    elif action == "isolate-follower":
                        victim = next(i for i in range(3) if i != cur)
                        cluster.isolate(victim)
                        events.append(f"{now - t0:5.1f}s isolate n{victim}")
                    elif action == "heal":
                        cluster.heal()
                        events.append(f"{now - t0:5.1f}s heal")
                    if not tty:
                        print(f"  {events[-1]}" if events else "", file=sys.stderr, flush=True)
                cur = cluster.leader()
                if cur is not None and cur != last_leader:
                    leader_changes += 1
                    last_leader = cur
                if now - last_print >= (0.2 if tty else 2.0):
                    last_print = now
                    line = (f"[{now - t0:4.1f}s] {_status_line(cluster, down)} | "
                            f"ops {stats.ops} err {stats.errors}")
                    if tty:
                        sys.stderr.write("\r\x1b[K" + line)
                    else:
                        sys.stderr.write(line + "\n")
                    sys.stderr.flush()
                time.sleep(0.05)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=10)
            if tty:
                sys.stderr.write("\n")
        cluster.heal()
    elapsed = time.monotonic() - t0
    if tty:  # (printed as they happened when stderr is not a terminal)
        print("events:", file=sys.stderr)
        for e in events:
            print(f"  {e}", file=sys.stderr)
    errs = ", ".join(f"{k} {v}" for k, v in sorted(stats.by_kind.items())) or "none"
    print(f"summary: {stats.ops} ops in {elapsed:.1f} s by {args.clients} clients, "
          f"{stats.errors} errors ({errs}), {leader_changes} leader changes, "
          f"{len(history)} ops in the history")
    result = raftkv.check_linearizable(history, timeout=args.check_timeout)
    result.visualize(out)
    verdict = {True: "linearizable", False: "NOT linearizable",
               None: f"unknown ({result.reason or 'undecided'})"}[result.ok]
    print(f"linearizability: {verdict} ({result.partitions} keys checked)")
    print(f"visualization: {os.path.abspath(out)}")
    return {True: 0, False: 1, None: 2}[result.ok]


# ----------------------------------------------------------------------------------------------
# bench
# ----------------------------------------------------------------------------------------------

def _start_servers(n: int, tmp: str, runtime: str,
                   workers: int) -> tuple[list[subprocess.Popen], list[str]]:
    ports = _free_ports(2 * n)
    peers = {i + 1: f"127.0.0.1:{ports[i]}" for i in range(n)}
    clients = {i + 1: f"127.0.0.1:{ports[n + i]}" for i in range(n)}
    peers_s = ",".join(f"{k}={v}" for k, v in peers.items())
    clients_s = ",".join(f"{k}={v}" for k, v in clients.items())
    procs = []
    for i in range(1, n + 1):
        log = open(os.path.join(tmp, f"node{i}.log"), "wb")  # noqa: SIM115
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "raftkv", "serve", "--id", str(i), "--peers", peers_s,
             "--client-addrs", clients_s, "--data-dir", os.path.join(tmp, f"node{i}"),
             "--runtime", runtime, "--workers", str(workers)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True))
        log.close()
    return procs, list(clients.values())


def _stop_servers(procs: list[subprocess.Popen]) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + 10
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def cmd_bench(args) -> int:
    procs: list[subprocess.Popen] = []
    tmp = None
    try:
        if args.endpoints:
            endpoints = _endpoints(args.endpoints)
            nodes = len(endpoints)
        else:
            tmp = tempfile.TemporaryDirectory(prefix="raftkv-bench-")
            print(f"bench: starting {args.nodes} `raftkv serve` processes (logs in {tmp.name})",
                  file=sys.stderr, flush=True)
            procs, endpoints = _start_servers(args.nodes, tmp.name, args.runtime,
                                             args.server_workers)
            nodes = args.nodes
        # wait until the cluster serves
        deadline = time.monotonic() + 30
        clerk = raftkv.Clerk(endpoints, timeout=2.0)
        while True:
            try:
                clerk.put("bench-ready", "1")
                break
            except raftkv.Error as e:
                dead = [p.args[4] for p in procs if p.poll() is not None]
                if dead:
                    raise raftkv.ClusterError(f"node(s) {', '.join(dead)} exited; "
                                              f"see the logs in {tmp.name if tmp else '?'}") from e
                if time.monotonic() > deadline:
                    raise
        print(f"bench: {args.clients} clients, mode {args.mode}, value {args.value_size} B, "
              f"warm-up {args.warmup} s, {args.seconds} s measured", file=sys.stderr, flush=True)
        tty = sys.stderr.isatty()

        def progress(elapsed, ops, errors):
            rate = ops / elapsed if elapsed > 0 else 0.0
            width = 30
            done = min(width, int(width * elapsed / args.seconds)) if args.seconds else width
            line = (f"[{'#' * done}{'.' * (width - done)}] {elapsed:5.1f}/{args.seconds:.0f} s "
                    f"{ops} ops {rate:,.0f} ops/s {errors} errors")
            sys.stderr.write(("\r\x1b[K" + line) if tty else (line + "\n"))
            sys.stderr.flush()

        r = raftkv.bench(endpoints, clients=args.clients, seconds=args.seconds, mode=args.mode,
                         value_size=args.value_size, warmup=args.warmup, progress=progress,
                         keyspace=args.keyspace)
        if tty:
            sys.stderr.write("\n")
        print(json.dumps({
            "mode": args.mode, "clients": args.clients, "nodes": nodes, "keyspace": args.keyspace,
            "seconds": round(r["seconds"], 3), "value_size": args.value_size,
            "ops_per_s": round(r["ops_per_s"], 1),
            "lat_us": {"p50": r["lat_us"]["p50"], "p99": r["lat_us"]["p99"],
                       "p999": r["lat_us"]["p999"]},
            "errors": r["errors"]}), flush=True)
        return 0
    finally:
        _stop_servers(procs)
        if tmp is not None:
            tmp.cleanup()


# ----------------------------------------------------------------------------------------------
# the parser
# ----------------------------------------------------------------------------------------------

def _workers(s: str) -> int:
    v = int(s)
    if not 1 <= v <= 256:
        raise argparse.ArgumentTypeError("must be 1..256")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="raftkv",
        description="raftkv: a linearizable key/value store on Raft. " + ADDRESSES_HELP)
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    s = sub.add_parser("serve", help="run one node until SIGINT/SIGTERM",
                       description="Run one node (Raft over TCP, log on LMDB) until SIGINT or "
                                   "SIGTERM. " + ADDRESSES_HELP)
    s.add_argument("--id", type=int, required=True, help="this node's Raft id (a key of --peers)")
    s.add_argument("--peers", required=True,
                   help="every node's Raft address: 1=HOST:PORT,2=HOST:PORT,...")
    s.add_argument("--data-dir", help="LMDB directory (required with --storage lmdb)")
    s.add_argument("--storage", choices=("lmdb", "memory"), default="lmdb")
    s.add_argument("--runtime", choices=("tokio", "smol"), default="tokio")
    s.add_argument("--workers", type=_workers, default=None, metavar="N",
                   help="worker threads of the process's tokio runtime (default 2); 1 suits "
                        "several nodes sharing a small machine")
    s.add_argument("--client-addrs", help="every node's client address: 1=HOST:PORT,... "
                                          "(default: peer port + --client-port-offset)")
    s.add_argument("--client-port-offset", type=int, default=1000,
                   help="client port = peer port + this (default 1000)")
    s.add_argument("--snapshot-threshold", type=int, default=None,
                   help="snapshot after this many log entries")
    s.set_defaults(func=cmd_serve)

    ep_help = ("client addresses HOST:PORT[,HOST:PORT...] of any nodes of the cluster "
               "(default: $RAFTKV_ENDPOINTS). " + ADDRESSES_HELP)
    g = sub.add_parser("get", help="read a key", description="Print KEY's value on stdout.")
    g.add_argument("key")
    g.add_argument("--endpoints", help=ep_help)
    g.add_argument("--timeout", type=float, default=10.0)
    g.add_argument("--version", action="store_true", help="also print the version on stderr")
    g.set_defaults(func=cmd_get)

    w = sub.add_parser("put", help="write a key", description="Write KEY; print its new version.")
    w.add_argument("key")
    w.add_argument("value")
    w.add_argument("--version", type=int, default=None,
                   help="conditional: only if the key's version is N (0: must not exist)")
    w.add_argument("--endpoints", help=ep_help)
    w.add_argument("--timeout", type=float, default=10.0)
    w.set_defaults(func=cmd_put)

    d = sub.add_parser("delete", help="delete a key")
    d.add_argument("key")
    d.add_argument("--endpoints", help=ep_help)
    d.add_argument("--timeout", type=float, default=10.0)
    d.set_defaults(func=cmd_delete)

    c = sub.add_parser("check", help="check a history for linearizability",
                       description="Check a history file. Exit 0: linearizable, 1: not, "
                                   "2: unknown or bad input.")
    c.add_argument("history", metavar="HISTORY")
    c.add_argument("--format", choices=("json", "porcupine-kv", "jepsen-etcd"), default=None,
                   help="default: from the extension (.log jepsen-etcd, .txt porcupine-kv, "
                        "else json)")
    c.add_argument("--model", choices=("kv", "register"), default=None,
                   help="default: the format's (kv for json and porcupine-kv, register for "
                        "jepsen-etcd)")
    c.add_argument("--no-partition", action="store_true",
                   help="check the history as one (no per-key split)")
    c.add_argument("--timeout", type=_positive_float, default=None, metavar="SECONDS",
                   help="give up after this long (exit 2)")
    c.add_argument("--html", metavar="OUT.html", help="write the visualization here")
    c.set_defaults(func=cmd_check)

    m = sub.add_parser("demo", help="3 local nodes, faults, a linearizability check",
                       description="Start 3 nodes (LocalCluster on LMDB in a temp dir), run "
                                   "clients while crashing, restarting, partitioning and "
                                   "healing nodes, then check the history and write "
                                   "raftkv-demo.html. Exit 0 when linearizable.")
    m.add_argument("--seconds", type=float, default=12.0)
    m.add_argument("--clients", type=int, default=4)
    m.add_argument("--keys", type=int, default=4)
    m.add_argument("--seed", type=int, default=None)
    m.add_argument("--html", default="raftkv-demo.html")
    m.add_argument("--check-timeout", type=float, default=60.0)
    m.set_defaults(func=cmd_demo)

    b = sub.add_parser("bench", help="closed-loop load; one JSON line on stdout",
                       description="Start --nodes `raftkv serve` processes (temp data dirs, "
                                   "free ports) unless --endpoints is given, drive --clients "
                                   "closed-loop Clerks (in Rust) and print one JSON line.")
    b.add_argument("--nodes", type=int, default=3)
    b.add_argument("--clients", type=int, default=64)
    b.add_argument("--seconds", type=float, default=10.0)
    b.add_argument("--mode", choices=("put", "get", "mixed"), default="put")
    b.add_argument("--value-size", type=int, default=100)
    b.add_argument("--warmup", type=float, default=1.0, metavar="S")
    b.add_argument("--keyspace", type=int, default=10_000,
                   help="keys k000000.. chosen uniformly (get and mixed write them all first)")
    b.add_argument("--endpoints", help="benchmark this running cluster instead")
    b.add_argument("--runtime", choices=("tokio", "smol"), default="tokio",
                   help="the servers' runtime")
    b.add_argument("--server-workers", type=_workers, default=1, metavar="N",
                   help="`raftkv serve --workers` for the servers it starts (default 1: the "
                        "nodes share this machine, and one worker each switches less)")
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``raftkv`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        _err(str(e))
        return 2
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    except raftkv.Timeout as e:
        _err(f"timeout: {e}")
        return 3
    except raftkv.Error as e:
        _err(f"{type(e).__name__}: {e}")
        return 3
    except ValueError as e:
        _err(str(e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
