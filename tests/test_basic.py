"""Single-client behaviour of the KV service over real TCP, on every storage and runtime:
versions, conditional puts, deletes, str/bytes handling, argument errors, status."""

from __future__ import annotations

import itertools
import json

import pytest
from conftest import ALL_COMBOS_FIXTURE, WAIT, local_cluster, wait_until

import raftkv

_keys = itertools.count()


def fresh_key(prefix="k"):
    return f"{prefix}-{next(_keys)}".encode()


@pytest.fixture(scope="module", params=ALL_COMBOS_FIXTURE)
def cluster(request):
    storage, runtime = request.param
    with local_cluster(storage, runtime) as c:
        yield c


@pytest.fixture(scope="module")
def clerk(cluster):
    return raftkv.Clerk(cluster.addrs, timeout=WAIT)


# --- versions -------------------------------------------------------------------------------


def test_first_write_is_version_1_and_each_write_adds_1(clerk):
    k = fresh_key()
    assert clerk.put(k, b"a") == 1
    assert clerk.get(k) == (b"a", 1)
    assert clerk.put(k, b"b") == 2
    assert clerk.append(k, b"c") == 3
    assert clerk.get(k) == (b"bc", 3)
    assert clerk.append(k, b"") == 4
    assert clerk.get(k) == (b"bc", 4)


def test_get_returns_bytes_and_int(clerk):
    k = fresh_key()
    clerk.put(k, b"\x00\xffbinary")
    value, version = clerk.get(k)
    assert type(value) is bytes and value == b"\x00\xffbinary"
    assert type(version) is int and version == 1


def test_append_to_missing_key_creates_it(clerk):
    k = fresh_key()
    assert clerk.append(k, b"x") == 1
    assert clerk.get(k) == (b"x", 1)


def test_get_missing_key_raises_key_not_found(clerk):
    with pytest.raises(raftkv.KeyNotFound):
        clerk.get(fresh_key("missing"))


def test_key_not_found_is_caught_as_a_key_error(clerk):
    k = fresh_key("missing")
    with pytest.raises(KeyError) as info:
        clerk.get(k)
    assert isinstance(info.value, raftkv.KeyNotFound)
    assert isinstance(info.value, raftkv.Error)
    assert "no such key" in str(info.value)


def test_conditional_put(clerk):
    k = fresh_key()
    assert clerk.put(k, b"v1") == 1
    assert clerk.put(k, b"v2", version=1) == 2
    assert clerk.put(k, b"v3", version=2) == 3
    assert clerk.get(k) == (b"v3", 3)


def test_conditional_put_mismatch_raises_and_changes_nothing(clerk):
    k = fresh_key()
    clerk.put(k, b"v1")
    clerk.put(k, b"v2")
    for wrong in (1, 3, 100):
        with pytest.raises(raftkv.VersionMismatch):
            clerk.put(k, b"nope", version=wrong)
    # version=0 means "must not exist": the key exists
    with pytest.raises(raftkv.VersionMismatch):
        clerk.put(k, b"nope", version=0)
    assert clerk.get(k) == (b"v2", 2)


def test_version_mismatch_carries_the_keys_current_version(clerk):
    k = fresh_key()
    clerk.put(k, b"v1")
    clerk.put(k, b"v2")
    clerk.put(k, b"v3")
    for wrong in (1, 2, 4, 0):
        with pytest.raises(raftkv.VersionMismatch) as info:
            clerk.put(k, b"nope", version=wrong)
        assert info.value.current == 3, (wrong, info.value)
        assert isinstance(info.value.current, int)
        assert "version=3" in str(info.value)
    # .current is what a retry needs: the put with it is applied
    assert clerk.put(k, b"v4", version=info.value.current) == 4
    assert clerk.get(k) == (b"v4", 4)


def test_conditional_put_version_0_creates_a_missing_key(clerk):
    k = fresh_key()
    assert clerk.put(k, b"new", version=0) == 1
    assert clerk.get(k) == (b"new", 1)


def test_conditional_put_on_missing_key_with_version_raises_key_not_found(clerk):
    k = fresh_key()
    with pytest.raises(raftkv.KeyNotFound):
        clerk.put(k, b"v", version=1)
    with pytest.raises(raftkv.KeyNotFound):
        clerk.get(k)


def test_delete(clerk):
    k = fresh_key()
    clerk.put(k, b"v")
    clerk.put(k, b"w")
    assert clerk.delete(k) is None
    with pytest.raises(raftkv.KeyNotFound):
        clerk.get(k)


def test_delete_missing_key_raises_key_not_found(clerk):
    k = fresh_key("never")
    with pytest.raises(raftkv.KeyNotFound):
        clerk.delete(k)
    k = fresh_key()
    clerk.put(k, b"v")
    clerk.delete(k)
    with pytest.raises(raftkv.KeyNotFound):
        clerk.delete(k)


def test_recreated_key_starts_again_at_version_1(clerk):
    k = fresh_key()
    clerk.put(k, b"a")
    clerk.put(k, b"b")
    clerk.put(k, b"c")
    clerk.delete(k)
    assert clerk.put(k, b"again") == 1
    assert clerk.get(k) == (b"again", 1)
    clerk.delete(k)
    # a conditional put with version 0 re-creates it too
    assert clerk.put(k, b"again2", version=0) == 1
    clerk.delete(k)
    assert clerk.append(k, b"tail") == 1


def test_str_keys_and_values_are_utf8(clerk):
    key = f"ключ-{next(_keys)}-ü-🙂"
    assert clerk.put(key, "значение-ü-🙂") == 1
    value, version = clerk.get(key)
    assert value == "значение-ü-🙂".encode()
    assert type(value) is bytes
    # the same key reached as bytes
    assert clerk.get(key.encode("utf-8")) == (value, 1)
    assert clerk.append(key.encode("utf-8"), "!") == 2
    assert clerk.get(key) == ("значение-ü-🙂!".encode(), 2)
    clerk.delete(key)
    with pytest.raises(raftkv.KeyNotFound):
        clerk.get(key.encode("utf-8"))


def test_empty_value(clerk):
    k = fresh_key()
    assert clerk.put(k, b"") == 1
    assert clerk.get(k) == (b"", 1)


def test_large_value(clerk):
    k = fresh_key()
    big = bytes(range(256)) * 1024  # 256 KiB
    clerk.put(k, big)
    assert clerk.get(k) == (big, 1)


def test_wrong_types_raise_type_error(clerk):
    k = fresh_key()
    for bad_key in (123, None, 1.5, ["k"], object()):
        with pytest.raises(TypeError):
            clerk.get(bad_key)
        with pytest.raises(TypeError):
            clerk.put(bad_key, b"v")
        with pytest.raises(TypeError):
            clerk.append(bad_key, b"v")
        with pytest.raises(TypeError):
            clerk.delete(bad_key)
    for bad_value in (123, None, 1.5, {"v": 1}):
        with pytest.raises(TypeError):
            clerk.put(k, bad_value)
        with pytest.raises(TypeError):
            clerk.append(k, bad_value)
    with pytest.raises(TypeError):
        clerk.put(k, b"v", version="1")
    # nothing above was written
    with pytest.raises(raftkv.KeyNotFound):
        clerk.get(k)


# --- the cluster and its status ---------------------------------------------------------------


def test_addrs(cluster):
    addrs = cluster.addrs
    assert isinstance(addrs, list) and len(addrs) == 3
    assert len(set(addrs)) == 3
    for a in addrs:
        assert isinstance(a, str)
        host, port = a.rsplit(":", 1)
        assert host == "127.0.0.1" and 0 < int(port) < 65536


STATUS_KEYS = (
    "id",
    "role",
    "term",
    "leader",
    "commit_index",
    "applied_index",
    "first_index",
    "last_index",
    "snapshot_index",
)


def test_status(cluster, clerk):
    clerk.put(fresh_key(), b"x")
    leader = cluster.wait_leader(timeout=WAIT)
    assert isinstance(leader, int) and 0 <= leader < 3
    st = cluster.status(leader)
    for key in STATUS_KEYS:
        assert key in st, f"status lacks {key!r}: {st}"
    assert isinstance(st, dict)

    def agree():
        sts = [cluster.status(i) for i in range(3)]
        leaders = [i for i, s in enumerate(sts) if s["role"] == "leader"]
        return len(leaders) == 1 and all(s["leader"] == leaders[0] for s in sts) and sts

    sts = wait_until(agree, what="all nodes to agree on one leader (status()['leader'] = index)")
    for i, s in enumerate(sts):
        assert s["role"] == ("leader" if s["leader"] == i else "follower"), s
        assert s["first_index"] <= s["last_index"] + 1
        assert s["applied_index"] <= s["commit_index"] <= s["last_index"]
        assert s["snapshot_index"] <= s["applied_index"]
        assert s["term"] >= 1
    wait_until(lambda: cluster.leader() is not None, what="leader()")


def test_status_names_each_node_by_index_and_by_raft_id(cluster, clerk):
    """Node index i (0-based, as in addrs) has Raft id i + 1; status() says both, for the node
    itself (index/id and raft_id) and for its leader (leader and leader_raft_id)."""
    clerk.put(fresh_key(), b"x")
    cluster.wait_leader(timeout=WAIT)

    def agree():
        sts = [cluster.status(i) for i in range(len(cluster))]
        leaders = {s["leader"] for s in sts}
        return len(leaders) == 1 and None not in leaders and sts

    sts = wait_until(agree, what="all nodes to name one leader")
    for i, s in enumerate(sts):
        assert "index" in s and "leader_raft_id" in s, s
        assert s["index"] == s["id"] == i, s
        assert s["raft_id"] == s["index"] + 1, s
        assert s["leader_raft_id"] == s["leader"] + 1, s
    leader = sts[0]["leader"]
    assert sts[leader]["role"] == "leader"
    assert sts[leader]["leader_raft_id"] == sts[leader]["raft_id"]


def test_clerk_server_status_reports_each_servers_view(cluster, clerk):
    # Regression: server_status returned only {"debug": ...} although documented as a dict
    # of the server's role, term, indexes.
    clerk.put(fresh_key(), b"x")
    leader = cluster.wait_leader(timeout=WAIT)
    st = clerk.server_status(cluster.addrs[leader])
    for key in (
        "raft_id",
        "role",
        "term",
        "leader",
        "commit_index",
        "applied_index",
        "first_index",
        "last_index",
        "snapshot_index",
    ):
        assert key in st, f"server_status lacks {key!r}: {st}"
    assert st["role"] == "leader"
    assert st["leader"] == st["raft_id"] == leader + 1
    assert st["applied_index"] <= st["commit_index"] <= st["last_index"]
    follower = clerk.server_status(cluster.addrs[(leader + 1) % 3])
    assert follower["role"] == "follower" and follower["term"] >= 1


def test_clerk_given_one_follower_address_follows_the_hint(cluster):
    leader = cluster.wait_leader(timeout=WAIT)
    for i in range(3):
        k = fresh_key()
        one = raftkv.Clerk([cluster.addrs[i]], timeout=WAIT)
        assert one.put(k, b"via-%d" % i) == 1
        assert one.get(k) == (b"via-%d" % i, 1)
    assert leader in range(3)


def test_history_records_clerk_operations(cluster):
    history = raftkv.History()
    c = cluster.clerk(history=history)
    k = fresh_key()
    kt = k.decode()
    assert len(history) == 0
    c.put(k, b"v1")
    c.put(k, "v2", version=1)
    with pytest.raises(raftkv.VersionMismatch):
        c.put(k, b"v3", version=7)
    c.append(k, b"+")
    assert c.get(k) == (b"v2+", 3)
    c.delete(k)
    with pytest.raises(raftkv.KeyNotFound):
        c.get(k)
    assert len(history) == 7

    doc = json.loads(history.to_json())
    assert doc["model"] == "kv"
    ops = doc["ops"]
    assert len(ops) == 7
    assert [o["input"]["op"] for o in ops] == [
        "put",
        "put",
        "put",
        "append",
        "get",
        "delete",
        "get",
    ]
    for o in ops:
        assert o["input"]["key"] == kt
        assert isinstance(o["call"], int) and isinstance(o["return"], int)
        assert o["return"] >= o["call"]
        assert isinstance(o["client"], int)
    assert len({o["client"] for o in ops}) == 1
    for a, b in zip(ops, ops[1:]):
        assert a["return"] <= b["call"], "one clerk's operations are sequential"
    assert ops[0]["input"]["value"] == "v1" and ops[0]["input"].get("version") is None
    assert ops[0]["output"]["version"] == 1 and ops[0]["output"]["err"] is None
    assert ops[1]["input"]["version"] == 1 and ops[1]["output"]["version"] == 2
    assert ops[2]["output"]["err"] == "version"
    assert ops[3]["input"]["value"] == "+" and ops[3]["output"]["version"] == 3
    assert ops[4]["output"]["value"] == "v2+" and ops[4]["output"]["version"] == 3
    assert ops[4]["output"]["err"] is None
    assert ops[5]["output"]["err"] is None
    assert ops[6]["output"]["err"] == "no_key"

    assert raftkv.check_linearizable(history).ok is True
    again = raftkv.History.from_json(history.to_json())
    assert len(again) == 7
    assert json.loads(again.to_json()) == doc
    assert raftkv.check_linearizable(again).ok is True


def test_two_clerks_share_one_history_as_two_clients(cluster):
    history = raftkv.History()
    a = cluster.clerk(history=history)
    b = raftkv.Clerk(cluster.addrs, history=history)
    k = fresh_key()
    a.put(k, b"1")
    b.put(k, b"2")
    assert a.get(k) == (b"2", 2)
    doc = json.loads(history.to_json())
    clients = [o["client"] for o in doc["ops"]]
    assert clients[0] == clients[2] != clients[1]
    assert raftkv.check_linearizable(history).ok is True
