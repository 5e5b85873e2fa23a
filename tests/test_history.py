"""raftkv.History and raftkv.check_linearizable on hand-written histories (no cluster)."""

from __future__ import annotations

import json
import threading

import pytest

import raftkv


def op(
    client,
    call,
    ret,
    kind,
    key,
    value=None,
    version=None,
    out_value=None,
    out_version=None,
    err=None,
):
    return {
        "client": client,
        "call": call,
        "return": ret,
        "input": {"op": kind, "key": key, "value": value, "version": version},
        "output": {"value": out_value, "version": out_version, "err": err},
    }


def history_of(*ops):
    return raftkv.History.from_json(json.dumps({"model": "kv", "ops": list(ops)}))


def check(*ops):
    return raftkv.check_linearizable(history_of(*ops)).ok


def test_empty_history():
    h = raftkv.History()
    assert len(h) == 0
    doc = json.loads(h.to_json())
    assert doc["ops"] == []
    assert raftkv.check_linearizable(h).ok is True


def test_sequential_ok():
    assert (
        check(
            op(0, 0, 10, "put", "k", "a", out_version=1),
            op(0, 20, 30, "get", "k", out_value="a", out_version=1),
            op(0, 40, 50, "append", "k", "b", out_version=2),
            op(0, 60, 70, "get", "k", out_value="ab", out_version=2),
            op(0, 80, 90, "delete", "k"),
            op(0, 100, 110, "get", "k", err="no_key"),
        )
        is True
    )


def test_stale_read_is_not_linearizable():
    assert (
        check(
            op(0, 0, 10, "put", "k", "a", out_version=1),
            op(0, 20, 30, "put", "k", "b", out_version=2),
            op(1, 40, 50, "get", "k", out_value="a", out_version=1),
        )
        is False
    )


def test_read_of_a_concurrent_write_is_linearizable():
    assert (
        check(
            op(0, 0, 10, "put", "k", "a", out_version=1),
            op(0, 20, 100, "put", "k", "b", out_version=2),
            op(1, 30, 40, "get", "k", out_value="a", out_version=1),
            op(1, 50, 60, "get", "k", out_value="b", out_version=2),
        )
        is True
    )


def test_wrong_version_is_not_linearizable():
    assert (
        check(
            op(0, 0, 10, "put", "k", "a", out_version=1),
            op(0, 20, 30, "put", "k", "b", out_version=1),
        )
        is False
    )


def test_conditional_put_semantics():
    assert (
        check(
            op(0, 0, 10, "put", "k", "a", version=0, out_version=1),
            op(0, 20, 30, "put", "k", "b", version=0, err="version"),
            op(0, 40, 50, "put", "k", "c", version=1, out_version=2),
            op(0, 60, 70, "put", "j", "x", version=3, err="no_key"),
        )
        is True
    )
    # a conditional put that claims success at the wrong version
    assert (
        check(
            op(0, 0, 10, "put", "k", "a", out_version=1),
            op(0, 20, 30, "put", "k", "b", version=5, out_version=6),
        )
        is False
    )


def test_unknown_outcome_may_have_applied_or_not():
    # the timed-out put (return null) is seen later
    assert (
        check(
            op(0, 0, None, "put", "k", "a", err="timeout"),
            op(1, 50, 60, "get", "k", out_value="a", out_version=1),
        )
        is True
    )
    # ... or never
    assert (
        check(
            op(0, 0, None, "put", "k", "a", err="timeout"),
            op(1, 50, 60, "get", "k", err="no_key"),
        )
        is True
    )
    # but not before its call
    assert (
        check(
            op(1, 0, 10, "get", "k", out_value="a", out_version=1),
            op(0, 50, None, "put", "k", "a", err="maybe"),
        )
        is False
    )


def test_keys_are_independent():
    assert (
        check(
            op(0, 0, 10, "put", "a", "1", out_version=1),
            op(1, 0, 10, "put", "b", "1", out_version=1),
            op(0, 20, 30, "get", "b", out_value="1", out_version=1),
            op(1, 20, 30, "get", "a", out_value="1", out_version=1),
        )
        is True
    )


def test_json_round_trip_keeps_everything():
    ops = [
        op(0, 0, 10, "put", "k", "a", out_version=1),
        op(1, 5, None, "append", "k", "b", err="timeout"),
        op(0, 20, 30, "put", "k", "c", version=1, err="version"),
        op(2, 40, 50, "get", "ключ", err="no_key"),
    ]
    h = history_of(*ops)
    assert len(h) == 4
    doc = json.loads(h.to_json())
    assert doc["model"] == "kv"
    assert len(doc["ops"]) == 4
    for mine, theirs in zip(ops, doc["ops"]):
        assert theirs["client"] == mine["client"]
        assert theirs["call"] == mine["call"]
        assert theirs["return"] == mine["return"]
        for field in ("op", "key"):
            assert theirs["input"][field] == mine["input"][field]
        assert theirs["input"].get("value") == mine["input"]["value"]
        assert theirs["input"].get("version") == mine["input"]["version"]
        assert theirs["output"].get("err") == mine["output"]["err"]
    assert json.loads(raftkv.History.from_json(h.to_json()).to_json()) == doc


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "not json",
        '{"model": "kv", "ops": [{"client": 0}]}',
        '{"model": "kv", "ops": [{"client": 0, "call": 1, "return": 2, '
        '"input": {"op": "frobnicate", "key": "k"}, "output": {}}]}',
    ],
)
def test_from_json_rejects_malformed(bad):
    with pytest.raises((ValueError, raftkv.Error)):
        raftkv.History.from_json(bad)


def test_from_json_type_error():
    with pytest.raises(TypeError):
        raftkv.History.from_json(123)


def test_visualize_writes_html(tmp_path):
    ok = raftkv.check_linearizable(
        history_of(
            op(0, 0, 10, "put", "k", "a", out_version=1),
            op(1, 20, 30, "get", "k", out_value="a", out_version=1),
        )
    )
    assert ok.ok is True
    bad = raftkv.check_linearizable(
        history_of(
            op(0, 0, 10, "put", "k", "a", out_version=1),
            op(1, 20, 30, "get", "k", out_value="zzz", out_version=1),
        )
    )
    assert bad.ok is False
    for name, result in (("ok.html", ok), ("bad.html", bad)):
        path = tmp_path / name
        result.visualize(str(path))
        text = path.read_text(encoding="utf-8")
        assert "<html" in text.lower()
        assert "</html>" in text.lower()


def test_check_timeout_argument_and_model():
    h = history_of(op(0, 0, 10, "put", "k", "a", out_version=1))
    assert raftkv.check_linearizable(h, model="kv", timeout=30.0).ok is True
    assert raftkv.check_linearizable(h, model="kv", timeout=None).ok is True


def test_history_is_thread_safe():
    """Many clerks recording concurrently into one History need real concurrency; here just
    check len/to_json from several threads while another history is filled by from_json."""
    ops = [
        op(i % 8, i * 10, i * 10 + 5, "put", f"k{i % 8}", f"v{i}", out_version=i // 8 + 1)
        for i in range(800)
    ]
    h = history_of(*ops)
    errors = []

    def reader():
        try:
            for _ in range(20):
                assert len(h) == 800
                assert len(json.loads(h.to_json())["ops"]) == 800
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=reader) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert raftkv.check_linearizable(h).ok is True
