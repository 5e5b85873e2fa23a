"""The 1-client durable put floor here vs raftkv's 1-client put p50 (issue 20), in one run.

    target/test-venv/bin/python benchmarks/put_floor.py [--repeats 3] [--ops 1000] [--dir /var/tmp]

A durable put needs the leader's and one follower's fsync (in parallel) plus two loopback round
trips (client -> leader -> follower -> leader -> client). This measures, in the same run:

- fsync: the WAL's own step, a 150-byte `pwrite` into a preallocated file + `fdatasync`, in
  `--dir` (must not be tmpfs), median of `--ops`, in 10 chunks alternating with the puts';
- fsync 2 of 3: three threads, each with its own file, start that step at once (the three
  nodes of a cluster on one machine share its disk); the time until the second one is done,
  as the leader's and one follower's fsync are. On a disk that serves one flush at a time
  this is about 2 x fsync, and then the floor this machine allows is that plus 2 x RTT;
- RTT: a 100-byte TCP ping-pong on 127.0.0.1 with a child process echoing (TCP_NODELAY);
  Python on both ends, so an upper bound of the kernel's round trip;
- raftkv: 3 `raftkv serve` processes (durable, data dirs in `--dir`), 1 client doing puts of
  100-byte values: `raftkv.Clerk` from Python (sequential) and one Rust Clerk (`raftkv.bench`,
  clients=1); and the status round trip of one server (`Clerk.server_status`: a request through
  the client port, no Raft);
- the same puts on 3 `raftkv serve --storage memory` processes (nothing on disk): what the path
  costs without the fsyncs, so durable - memory is what durability adds.

Prints each repeat, then medians and put p50 / floor, where floor = fsync + 2 x RTT, and put
p50 / shared-disk floor, where that floor = fsync 2 of 3 + 2 x RTT.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import raftkv
from raftkv import procs

ECHO = """
import socket, sys
s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen(1)
print(s.getsockname()[1], flush=True)
c, _ = s.accept(); c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    b = c.recv(4096)
    if not b:
        break
    c.sendall(b)
"""


def fsync_lat(directory: str, ops: int) -> list[float]:
    fd, path = tempfile.mkstemp(prefix="wal-floor-", dir=directory)
    try:
        size = 150 * (ops + 1)
        os.write(fd, b"\0" * size)
        os.fsync(fd)
        record = os.urandom(150)
        lat = []
        for i in range(ops):
            t = time.perf_counter_ns()
            os.pwrite(fd, record, i * 150)
            os.fdatasync(fd)
            lat.append((time.perf_counter_ns() - t) / 1000)
        return lat
    finally:
        os.close(fd)
        os.unlink(path)


def parallel_fsync_lat(directory: str, ops: int, writers: int = 3, quorum: int = 2) -> list[float]:
    """`writers` threads (own files) do the WAL step at once, `ops` times; per op, the time
    until `quorum` of them are done."""
    files = []
    for _ in range(writers):
        fd, path = tempfile.mkstemp(prefix="wal-floor-par-", dir=directory)
        os.write(fd, b"\0" * 150 * (ops + 1))
        os.fsync(fd)
        files.append((fd, path))
    start = threading.Barrier(writers + 1)
    end = threading.Barrier(writers + 1)
    done = [0] * writers
    record = os.urandom(150)

    def writer(w: int) -> None:
        fd = files[w][0]
        for i in range(ops):
            start.wait()
            os.pwrite(fd, record, i * 150)
            os.fdatasync(fd)
            done[w] = time.perf_counter_ns()
            end.wait()

    threads = [threading.Thread(target=writer, args=(w,), daemon=True) for w in range(writers)]
    for t in threads:
        t.start()
    lat = []
    try:
        for _ in range(ops):
            start.wait()
            t0 = time.perf_counter_ns()
            end.wait()
            lat.append((sorted(done)[quorum - 1] - t0) / 1000)
    finally:
        for t in threads:
            t.join(10)
        for fd, path in files:
            os.close(fd)
            os.unlink(path)
    return lat


def rtt_us(ops: int) -> float:
    p = subprocess.Popen([sys.executable, "-c", ECHO], stdout=subprocess.PIPE, text=True)
    try:
        assert p.stdout is not None
        port = int(p.stdout.readline())
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        msg = b"x" * 100
        lat = []
        for _ in range(ops):
            t = time.perf_counter_ns()
            s.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(s.recv(4096))
            lat.append((time.perf_counter_ns() - t) / 1000)
        s.close()
        return statistics.median(lat)
    finally:
        p.kill()
        p.wait()


def python_put_lat(addrs: list[str], ops: int, seed: int) -> list[float]:
    clerk = raftkv.Clerk(addrs)
    rng = random.Random(seed)
    value = b"v" * 100
    lat = []
    for _ in range(ops):
        key = f"k{rng.randrange(10_000):06d}"
        t = time.perf_counter_ns()
        clerk.put(key, value)
        lat.append((time.perf_counter_ns() - t) / 1000)
    return lat


def status_us(addr: str, ops: int) -> float:
    clerk = raftkv.Clerk([addr])
    lat = []
    for _ in range(ops):
        t = time.perf_counter_ns()
        clerk.server_status(addr)
        lat.append((time.perf_counter_ns() - t) / 1000)
    return statistics.median(lat)


def start_memory_servers(log_dir: str) -> tuple[list[subprocess.Popen[bytes]], list[str]]:
    """3 `raftkv serve --storage memory` processes (no disk at all), as procs.start_servers."""
    ports = procs.free_ports(6)
    peers = ",".join(f"{i + 1}=127.0.0.1:{ports[i]}" for i in range(3))
    clients = ",".join(f"{i + 1}=127.0.0.1:{ports[3 + i]}" for i in range(3))
    servers = []
    for i in range(1, 4):
        with open(os.path.join(log_dir, f"mem{i}.log"), "wb") as log:
            cmd = [sys.executable, "-m", "raftkv", "serve", "--id", str(i), "--peers", peers]
            cmd += ["--client-addrs", clients, "--storage", "memory", "--workers", "1"]
            servers.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
    return servers, [f"127.0.0.1:{p}" for p in ports[3:]]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--dir", default="/var/tmp", help="where the WAL file and data dirs go")
    args = ap.parse_args()
    print(f"# cpus {os.cpu_count()}, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows: list[dict[str, float]] = []
    with tempfile.TemporaryDirectory(prefix="raftkv-floor-", dir=args.dir) as tmp:
        servers, addrs = procs.start_servers(3, tmp, "tokio", 1)
        mem_servers, mem_addrs = start_memory_servers(tmp)
        servers += mem_servers
        try:
            procs.wait_serving(addrs, servers, timeout=30.0, log_dir=tmp)
            procs.wait_serving(mem_addrs, servers, timeout=30.0, log_dir=tmp)
            for r in range(args.repeats):
                # The disk is shared: fsyncs and puts alternate in chunks, so that a burst of
                # someone else's writes lands on both.
                fsync: list[float] = []
                fsync_par: list[float] = []
                put: list[float] = []
                put_memory: list[float] = []
                chunk = max(1, args.ops // 10)
                for c in range(10):
                    fsync += fsync_lat(args.dir, chunk)
                    fsync_par += parallel_fsync_lat(args.dir, chunk)
                    put += python_put_lat(addrs, chunk, seed=c)
                    put_memory += python_put_lat(mem_addrs, chunk, seed=c)
                row = {
                    "fsync": statistics.median(fsync),
                    "fsync_2of3": statistics.median(fsync_par),
                    "rtt": rtt_us(args.ops),
                    "status": status_us(addrs[0], args.ops),
                    "py_put": statistics.median(put),
                    "py_put_memory": statistics.median(put_memory),
                }
                b = raftkv.bench(addrs, clients=1, seconds=2.0, warmup=0.3)
                row["rust_put"] = float(b["lat_us"]["p50"])
                row["floor"] = row["fsync"] + 2 * row["rtt"]
                row["floor_shared"] = row["fsync_2of3"] + 2 * row["rtt"]
                rows.append(row)
                print(f"repeat {r}: " + ", ".join(f"{k} {v:.0f} us" for k, v in row.items()))
        finally:
            procs.stop_servers(servers)
    med = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    print(f"# medians of {args.repeats} repeats, load average {os.getloadavg()[0]:.2f}")
    print(f"fsync (pwrite 150 B + fdatasync)   {med['fsync']:8.0f} us")
    print(f"loopback RTT (Python echo)         {med['rtt']:8.0f} us")
    print(f"floor = fsync + 2 x RTT            {med['floor']:8.0f} us")
    print(f"fsync 2 of 3 at once (one disk)    {med['fsync_2of3']:8.0f} us")
    print(f"shared-disk floor = that + 2 x RTT {med['floor_shared']:8.0f} us")
    print(f"server_status round trip (Python)  {med['status']:8.0f} us")
    for name, key in (("Python Clerk", "py_put"), ("Rust Clerk", "rust_put")):
        label = f"put p50, {name}, 1 client"
        print(
            f"{label:<34} {med[key]:8.0f} us  {med[key] / med['floor']:.2f}x floor, "
            f"{med[key] / med['floor_shared']:.2f}x shared-disk floor"
        )
    label = "put p50, Python Clerk, memory"
    print(f"{label:<34} {med['py_put_memory']:8.0f} us  (no disk: the rest of the path)")
    print(f"{'durable - memory':<34} {med['py_put'] - med['py_put_memory']:8.0f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
