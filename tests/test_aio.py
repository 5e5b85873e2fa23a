"""raftkv.aio.Clerk, the asyncio client: the threaded Clerk's operations and errors as
coroutines, many concurrent tasks on one Clerk (linearizable, through a leader crash),
cancellation, timeouts and closing."""

from __future__ import annotations

import asyncio
import itertools
import json
import threading
import time

import pytest
from conftest import WAIT, assert_linearizable, local_cluster

import raftkv
import raftkv.aio

_keys = itertools.count()


def fresh_key(prefix="aio"):
    return f"{prefix}-{next(_keys)}".encode()


@pytest.fixture(scope="module")
def cluster():
    with local_cluster("memory", "tokio") as c:
        yield c


def lanes(history) -> int:
    """The number of client lanes (Rust Clerks) that recorded operations."""
    return len({op["client"] for op in json.loads(history.to_json())["ops"]})


# --- operations and errors ------------------------------------------------------------------


def test_operations_return_what_the_threaded_clerk_returns(cluster):
    async def main():
        async with raftkv.aio.Clerk(cluster.addrs, timeout=WAIT) as clerk:
            k = fresh_key()
            assert await clerk.put(k, b"a") == 1
            assert await clerk.get(k) == (b"a", 1)
            assert await clerk.append(k, "b") == 2
            value, version = await clerk.get(k.decode())
            assert type(value) is bytes and value == b"ab" and version == 2
            assert await clerk.put(k, b"c", version=2) == 3
            assert await clerk.delete(k) is None
            assert await clerk.put(k, b"new", version=0) == 1
            status = await clerk.server_status(cluster.addrs[0])
            threaded = cluster.clerk().server_status(cluster.addrs[0])
            assert status.keys() == threaded.keys()
            assert status["raft_id"] == threaded["raft_id"] == 1
            assert clerk.addresses == cluster.addrs and clerk.timeout == WAIT
            # The threaded Clerk sees the same data.
            assert cluster.clerk().get(k) == (b"new", 1)

    asyncio.run(main())


def test_errors_are_the_threaded_clerks_typed_exceptions(cluster):
    async def main():
        async with raftkv.aio.Clerk(cluster.addrs, timeout=WAIT) as clerk:
            k = fresh_key()
            with pytest.raises(raftkv.KeyNotFound):
                await clerk.get(k)
            with pytest.raises(KeyError):
                await clerk.delete(k)
            with pytest.raises(raftkv.KeyNotFound):
                await clerk.put(k, b"x", version=3)
            await clerk.put(k, b"x")
            with pytest.raises(raftkv.VersionMismatch) as e:
                await clerk.put(k, b"y", version=5)
            assert e.value.current == 1
            with pytest.raises(raftkv.VersionMismatch):
                await clerk.put(k, b"y", version=0)
            assert await clerk.get(k) == (b"x", 1)

    asyncio.run(main())


def test_bad_arguments_raise_typed_exceptions(cluster):
    with pytest.raises(ValueError):
        raftkv.aio.Clerk(["nonsense"])
    with pytest.raises(ValueError):
        raftkv.aio.Clerk([])
    with pytest.raises(ValueError):
        raftkv.aio.Clerk(cluster.addrs, timeout=0)
    with pytest.raises(TypeError):
        raftkv.aio.Clerk(cluster.addrs, history="not a history")

    async def main():
        async with raftkv.aio.Clerk(cluster.addrs, timeout=WAIT) as clerk:
            with pytest.raises(TypeError):
                await clerk.get(42)
            with pytest.raises(TypeError):
                await clerk.put(b"k", None)
            with pytest.raises(TypeError):
                await clerk.put(b"k", b"v", version=True)
            with pytest.raises(TypeError):
                await clerk.put(b"k", b"v", version="1")
            with pytest.raises(ValueError):
                await clerk.put(b"k", b"v", version=-1)
            # Nothing was left in flight by the refused calls.
            assert clerk._core.in_flight() == 0

    asyncio.run(main())


# --- many tasks -------------------------------------------------------------------------------


def test_1000_concurrent_tasks_are_linearizable(cluster, tmp_path):
    history = raftkv.History()
    keys = [fresh_key("many") for _ in range(20)]

    async def one(clerk, i):
        k = keys[i % len(keys)]
        if i % 3 == 0:
            return await clerk.append(k, f"{i},")
        if i % 3 == 1:
            return await clerk.put(k, f"p{i}")
        try:
            return await clerk.get(k)
        except raftkv.KeyNotFound:
            return None

    async def main():
        async with raftkv.aio.Clerk(cluster.addrs, timeout=WAIT, history=history) as clerk:
            return await asyncio.gather(*(one(clerk, i) for i in range(1000)))

    results = asyncio.run(main())
    assert len(results) == 1000
    assert len(history) == 1000
    # The operations overlapped: one Clerk ran them on many Rust Clerks (client lanes).
    assert lanes(history) > 50, f"only {lanes(history)} lanes: the operations ran one by one"
    assert_linearizable(history, tmp_path, "aio-1000")


def test_more_tasks_than_in_flight_operations_wait_for_a_slot(cluster):
    n = raftkv._raftkv._AioCore.in_flight_max * 2
    k = fresh_key("slots")

    async def main():
        async with raftkv.aio.Clerk(cluster.addrs, timeout=WAIT) as clerk:
            await clerk.put(k, b"v")
            return await asyncio.gather(*(clerk.get(k) for _ in range(n)))

    assert asyncio.run(main()) == [(b"v", 1)] * n


def test_leader_crash_during_concurrent_writes(tmp_path):
    history = raftkv.History()
    keys = [fresh_key("crash") for _ in range(8)]
    with local_cluster("lmdb", "tokio") as cluster:
        crashed = asyncio.Event()
        acked = {"before": 0, "after": 0}

        async def writer(clerk, w, stop):
            done = 0
            while not stop.is_set():
                try:
                    await clerk.append(keys[w % len(keys)], f"{w}.{done},")
                    done += 1
                    acked["after" if crashed.is_set() else "before"] += 1
                except (raftkv.Timeout, raftkv.MaybeApplied):
                    pass

        async def main():
            stop = asyncio.Event()
            async with raftkv.aio.Clerk(cluster.addrs, timeout=WAIT, history=history) as clerk:
                tasks = [asyncio.create_task(writer(clerk, w, stop)) for w in range(64)]
                await asyncio.sleep(0.5)
                leader = cluster.leader()
                assert leader is not None
                cluster.crash(leader)
                crashed.set()
                # Writes go on under a new leader.
                deadline = time.monotonic() + WAIT
                while acked["after"] < 500 and time.monotonic() < deadline:
                    await asyncio.sleep(0.05)
                stop.set()
                await asyncio.gather(*tasks)

        asyncio.run(main())
        assert acked["before"] > 0, "no write finished before the crash"
        assert acked["after"] >= 500, f"writes did not resume after the crash: {acked}"
    assert_linearizable(history, tmp_path, "aio-leader-crash")


# --- cancellation, timeouts, closing ----------------------------------------------------------


def test_cancelled_operations_leave_nothing_in_flight_and_the_clerk_works(cluster, tmp_path):
    history = raftkv.History()
    keys = [fresh_key("cancel") for _ in range(50)]

    async def main():
        async with raftkv.aio.Clerk(cluster.addrs, timeout=WAIT, history=history) as clerk:
            tasks = [
                asyncio.create_task(clerk.append(keys[i % len(keys)], f"{i},")) for i in range(200)
            ]
            await asyncio.sleep(0)  # every task has started its operation
            assert clerk._core.in_flight() > 0
            for t in tasks[::2]:
                t.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            cancelled = sum(isinstance(r, asyncio.CancelledError) for r in results)
            assert cancelled > 0
            assert clerk._core.in_flight() == 0
            assert not clerk._waiting
            # The Clerk still works, and sees values the appends could have made: each
            # append at most once, every one that returned.
            appended = []
            for k in keys:
                try:
                    value, _ = await clerk.get(k)
                except raftkv.KeyNotFound:  # every append to it was cancelled before sending
                    continue
                appended += [p for p in value.decode().split(",") if p]
            assert len(appended) == len(set(appended)) >= 200 - cancelled
            returned = {str(i) for i, r in enumerate(results) if isinstance(r, int)}
            assert returned <= set(appended)

    asyncio.run(main())
    assert_linearizable(history, tmp_path, "aio-cancel")


def test_cancel_while_no_majority_returns_at_once():
    with local_cluster("memory", "tokio") as cluster:
        clerk = raftkv.aio.Clerk(cluster.addrs, timeout=30.0)
        k = fresh_key("nomajority")
        for i in range(3):
            cluster.crash(i)

        async def main():
            task = asyncio.create_task(clerk.put(k, b"v"))
            await asyncio.sleep(0.3)
            assert not task.done()
            start = time.monotonic()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert time.monotonic() - start < 1.0
            assert clerk._core.in_flight() == 0

        asyncio.run(main())
        clerk.close()


def test_no_majority_raises_timeout():
    with local_cluster("memory", "tokio") as cluster:
        leader = cluster.wait_leader(timeout=WAIT)
        for i in range(3):
            if i != leader:
                cluster.crash(i)

        async def main():
            async with raftkv.aio.Clerk(cluster.addrs, timeout=1.0) as clerk:
                start = time.monotonic()
                results = await asyncio.gather(
                    *(clerk.put(fresh_key("timeout"), b"v") for _ in range(10)),
                    return_exceptions=True,
                )
                return results, time.monotonic() - start

        results, took = asyncio.run(main())
        assert all(isinstance(r, raftkv.Timeout) for r in results), results
        assert all(isinstance(r, TimeoutError) for r in results)
        assert took < 5.0


def test_close_fails_pending_calls_with_error_and_later_calls_too():
    with local_cluster("memory", "tokio") as cluster:
        for i in range(3):
            cluster.crash(i)

        async def main():
            clerk = raftkv.aio.Clerk(cluster.addrs, timeout=30.0)
            tasks = [asyncio.create_task(clerk.put(fresh_key("close"), b"v")) for _ in range(5)]
            await asyncio.sleep(0.2)
            clerk.close()
            results = await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), 2)
            assert all(type(r) is raftkv.Error for r in results), results
            assert clerk.closed and clerk._core.in_flight() == 0
            with pytest.raises(raftkv.Error, match="closed"):
                await clerk.get(b"k")
            clerk.close()  # idempotent

        asyncio.run(main())


def test_one_clerk_serves_successive_event_loops(cluster):
    clerk = raftkv.aio.Clerk(cluster.addrs, timeout=WAIT)
    k = fresh_key("loops")
    assert asyncio.run(clerk.put(k, b"a")) == 1
    assert asyncio.run(clerk.append(k, b"b")) == 2
    assert asyncio.run(clerk.get(k)) == (b"ab", 2)
    clerk.close()


def test_operations_in_flight_on_one_loop_refuse_another_loop():
    with local_cluster("memory", "tokio") as cluster:
        for i in range(3):
            cluster.crash(i)
        clerk = raftkv.aio.Clerk(cluster.addrs, timeout=30.0)
        errors = []

        async def first():
            task = asyncio.create_task(clerk.put(b"k", b"v"))
            await asyncio.sleep(0.1)

            def other_loop():
                try:
                    asyncio.run(clerk.get(b"k"))
                except BaseException as e:
                    errors.append(e)

            t = threading.Thread(target=other_loop)
            t.start()
            t.join()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(first())
        clerk.close()
        assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors


def test_raftkv_aio_is_reachable_from_the_package():
    import importlib

    assert importlib.import_module("raftkv").aio.Clerk is raftkv.aio.Clerk


# --- the threaded Clerk's connections -------------------------------------------------------


def _sockets() -> int:
    import os

    fds = os.listdir("/proc/self/fd")
    n = 0
    for fd in fds:
        try:
            n += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
        except OSError:
            pass
    return n


def test_threaded_clerks_share_one_connection_per_server(cluster):
    # 64 Clerks in one process used to open 64 connections to the leader (each its own
    # connector); they share one per server now, as the aio Clerk's operations do.
    before = _sockets()
    clerks = [raftkv.Clerk(cluster.addrs, timeout=WAIT) for _ in range(64)]
    for i, c in enumerate(clerks):
        c.put(fresh_key("share"), f"{i}")
    opened = _sockets() - before
    # The cluster runs in this process, so each connection is two sockets here (both ends):
    # 64 connections were 128 sockets. A few more than 2 per server can open meanwhile (the
    # nodes' own peer connections), so the bound leaves room for those, not for one per Clerk.
    assert opened < 32, f"{opened} sockets opened by 64 Clerks"
