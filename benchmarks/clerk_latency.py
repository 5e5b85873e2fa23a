"""Python Clerk vs Rust Clerk at 1 client, against the same cluster in the same run.

    python benchmarks/clerk_latency.py [--ops 2000] [--repeats 3] [--storage lmdb|memory]

Starts one 3-node LocalCluster, then alternates: N sequential puts from Python
(`raftkv.Clerk.put`, 100-byte values, keys uniform over 10,000) and the same workload by one
Rust Clerk (`raftkv.bench(..., clients=1)`) for about as long. Prints the median latency of
each, per repeat and overall, and the ratio Python / Rust (issue 6's target: <= 1.3).
"""

import argparse
import random
import statistics
import time

import raftkv


def python_run(addrs, ops, value):
    clerk = raftkv.Clerk(addrs)
    rng = random.Random(7)
    lat = []
    for _ in range(ops):
        key = f"k{rng.randrange(10_000):06d}"
        t = time.perf_counter_ns()
        clerk.put(key, value)
        lat.append((time.perf_counter_ns() - t) / 1000)
    return statistics.median(lat), ops / (sum(lat) / 1e6)


def rust_run(addrs, seconds):
    r = raftkv.bench(addrs, clients=1, seconds=seconds, mode="put", value_size=100, warmup=0.3)
    return r["lat_us"]["p50"], r["ops_per_s"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ops", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--storage", choices=("lmdb", "memory"), default="lmdb")
    args = ap.parse_args()
    value = "x" * 100
    with raftkv.LocalCluster(n=3, storage=args.storage) as cluster:
        cluster.wait_leader()
        addrs = cluster.addrs
        python_run(addrs, 200, value)  # warm-up: connections, sessions
        py, rs = [], []
        for rep in range(args.repeats):
            t = time.monotonic()
            p50, rate = python_run(addrs, args.ops, value)
            seconds = max(1.0, time.monotonic() - t)
            py.append(p50)
            r50, rrate = rust_run(addrs, seconds)
            rs.append(r50)
            print(
                f"repeat {rep + 1}: python p50 {p50:,.0f} us ({rate:,.0f} ops/s) | "
                f"rust p50 {r50:,.0f} us ({rrate:,.0f} ops/s)"
            )
        p, r = statistics.median(py), statistics.median(rs)
        print(
            f"median p50: python {p:,.0f} us, rust {r:,.0f} us, python/rust {p / r:.2f}x "
            f"({args.storage}, 1 client, 3 nodes, {args.ops} puts per python run)"
        )


if __name__ == "__main__":
    main()
