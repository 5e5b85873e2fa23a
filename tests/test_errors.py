"""The exception hierarchy, argument validation, and Timeout when no majority can answer."""

from __future__ import annotations

import pytest
from conftest import WAIT, combos, local_cluster, wait_until

import raftkv

ERRORS = ("KeyNotFound", "VersionMismatch", "MaybeApplied", "Timeout")


def test_error_is_an_exception():
    assert issubclass(raftkv.Error, Exception)


@pytest.mark.parametrize("name", ERRORS)
def test_errors_subclass_raftkv_error(name):
    cls = getattr(raftkv, name)
    assert isinstance(cls, type)
    assert issubclass(cls, raftkv.Error)
    assert cls is not raftkv.Error


def test_errors_are_distinct():
    classes = [getattr(raftkv, n) for n in ERRORS]
    for a in classes:
        for b in classes:
            if a is not b:
                assert not issubclass(a, b), f"{a.__name__} must not subclass {b.__name__}"


def test_key_not_found_is_also_a_key_error_and_timeout_a_timeout_error():
    """Code written for dictionaries and timeouts catches them as the standard exceptions."""
    assert issubclass(raftkv.KeyNotFound, KeyError)
    assert issubclass(raftkv.Timeout, TimeoutError)
    # KeyError's str() would quote the message; these read as written.
    assert str(raftkv.KeyNotFound("no such key")) == "no such key"
    assert str(raftkv.Timeout("timed out")) == "timed out"


def test_version_mismatch_carries_current_which_defaults_to_none():
    e = raftkv.VersionMismatch("version mismatch", 7)
    assert e.current == 7 and isinstance(e, raftkv.Error)
    assert raftkv.VersionMismatch("version mismatch").current is None


@pytest.mark.parametrize(
    "addrs",
    [
        [],
        ["127.0.0.1"],  # no port
        ["127.0.0.1:notaport"],
        ["127.0.0.1:70000"],  # port out of range
        [":7001:"],
        [""],
        ["127.0.0.1:7001", "garbage"],  # one bad address among good ones
    ],
    ids=[
        "empty",
        "no-port",
        "port-not-a-number",
        "port-out-of-range",
        "colons",
        "empty-string",
        "one-bad",
    ],
)
def test_bad_addresses_raise_value_error(addrs):
    with pytest.raises(ValueError):
        raftkv.Clerk(addrs, timeout=1.0)


def test_addresses_of_wrong_type_raise_type_error():
    with pytest.raises(TypeError):
        raftkv.Clerk([7001], timeout=1.0)
    with pytest.raises(TypeError):
        raftkv.Clerk(None, timeout=1.0)


def test_local_cluster_rejects_bad_arguments():
    with pytest.raises(ValueError):
        raftkv.LocalCluster(n=3, storage="floppy")
    with pytest.raises(ValueError):
        raftkv.LocalCluster(n=3, runtime="asyncio")
    with pytest.raises(ValueError):
        raftkv.LocalCluster(n=0)


def test_clerk_to_nothing_listening_times_out():
    # a port nobody listens on: every attempt is refused, the deadline wins
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    clerk = raftkv.Clerk([f"127.0.0.1:{port}"], timeout=1.0)
    with pytest.raises(raftkv.Timeout):
        clerk.get(b"k")
    with pytest.raises(raftkv.Timeout):
        clerk.put(b"k", b"v")
    # the same failure, caught as the standard exception
    with pytest.raises(TimeoutError) as info:
        clerk.get(b"k")
    assert isinstance(info.value, raftkv.Timeout)


@pytest.mark.parametrize("storage,runtime", combos(("memory", "tokio"), ("lmdb", "smol")))
def test_no_majority_times_out(storage, runtime):
    with local_cluster(storage, runtime) as cluster:
        clerk = raftkv.Clerk(cluster.addrs, timeout=WAIT)
        clerk.put(b"k", b"v")
        leader = cluster.wait_leader(timeout=WAIT)
        followers = [i for i in range(3) if i != leader]
        for f in followers:
            cluster.crash(f)
        # the lone old leader steps down (CheckQuorum); then nobody leads
        wait_until(lambda: cluster.leader() is None, what="the lone node to step down")
        with pytest.raises(raftkv.Timeout):
            cluster.wait_leader(timeout=0.5)
        short = raftkv.Clerk(cluster.addrs, timeout=1.0)
        with pytest.raises(raftkv.Timeout):
            short.get(b"k")
        with pytest.raises(raftkv.Timeout):
            short.put(b"k", b"w")
        # a majority again: service resumes, the acknowledged write is there
        cluster.restart(followers[0])
        cluster.wait_leader(timeout=WAIT)
        value, version = clerk.get(b"k")
        # the timed-out put may or may not have been applied later
        assert (value, version) in ((b"v", 1), (b"w", 2))


def test_every_exported_exception_subclasses_raftkv_error():
    exported = [getattr(raftkv, name) for name in dir(raftkv) if not name.startswith("_")]
    classes = [c for c in exported if isinstance(c, type) and issubclass(c, BaseException)]
    assert raftkv.Error in classes
    for cls in classes:
        assert issubclass(cls, raftkv.Error), f"raftkv.{cls.__name__} is not a raftkv.Error"


def test_request_over_the_frame_bound_fails_at_once_not_by_timeout():
    """A put of a value larger than a request may be (the client frame bound is 4 MiB) cannot
    succeed on any retry: the Clerk should say so at once (raftkv.TooLarge, a raftkv.Error),
    not retry until its timeout and raise raftkv.Timeout (an unknown outcome)."""
    import time

    with local_cluster("memory", "tokio") as cluster:
        clerk = raftkv.Clerk(cluster.addrs, timeout=6.0)
        start = time.monotonic()
        with pytest.raises(raftkv.Error) as info:
            clerk.put(b"big", b"x" * (5 << 20))
        elapsed = time.monotonic() - start
        assert not isinstance(info.value, raftkv.Timeout), (
            f"a too-large put raised Timeout after {elapsed:.1f} s instead of TooLarge"
        )
        assert isinstance(info.value, raftkv.TooLarge), repr(info.value)
        assert elapsed < 3
        # just under the bound works
        assert clerk.put(b"big", b"x" * (3 << 20)) == 1
