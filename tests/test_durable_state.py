"""Issue 20: the KV state in LMDB (``state="lmdb"``, ``raftkv serve --state lmdb``): the same
answers as the heap state, kept across crashes and restarts, refused where it cannot be."""

import os

import pytest

import raftkv


def test_a_cluster_with_its_state_in_lmdb_keeps_it_across_crashes(tmp_path):
    with raftkv.LocalCluster(3, storage="lmdb", data_dir=tmp_path, state="lmdb") as c:
        ck = raftkv.Clerk(c.addrs)
        for i in range(200):
            ck.put(f"k{i}", f"v{i}")
        ck.append("k7", "+")
        assert ck.get("k7") == (b"v7+", 2)
        for i in range(3):
            c.crash(i)
            c.restart(i)
            ck.append("k7", str(i))
        assert ck.get("k7") == (b"v7+012", 5)
        assert ck.get("k199") == (b"v199", 1)
        assert os.path.isdir(tmp_path / "node1" / "state")


def test_state_lmdb_needs_lmdb_storage_and_a_known_state_is_named():
    with pytest.raises(ValueError, match="lmdb"):
        raftkv.LocalCluster(1, storage="memory", state="lmdb")
    with pytest.raises(ValueError, match="state"):
        raftkv.LocalCluster(1, storage="memory", state="tape")
    with pytest.raises(ValueError, match="lmdb"):
        raftkv.Node(1, {1: "127.0.0.1:1"}, storage="memory", state="lmdb")


def test_serve_refuses_state_lmdb_without_lmdb_storage():
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "raftkv", "serve", "--id", "1", "--peers", "1=127.0.0.1:1"]
        + ["--storage", "memory", "--state", "lmdb"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "--state lmdb" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_state_lmdb_bounds_data_by_the_snapshot_transfer_not_a_stored_copy(tmp_path):
    """Issue 20: no stored snapshot copy bounds the data of an LMDB state: ``data_bytes_max``
    may go to 8 GiB there (the default), while an in-memory state stays at most 512 MiB."""
    gib = 1 << 30
    with pytest.raises(ValueError, match="1 to 536870912 bytes"):
        raftkv.LocalCluster(1, storage="lmdb", data_dir=tmp_path / "m", data_bytes_max=gib)
    with pytest.raises(ValueError, match="1 to 8589934592 bytes"):
        raftkv.LocalCluster(
            1, storage="lmdb", data_dir=tmp_path / "l", state="lmdb", data_bytes_max=9 * gib
        )
    with raftkv.LocalCluster(
        1, storage="lmdb", data_dir=tmp_path / "l", state="lmdb", data_bytes_max=4 * gib
    ) as c:
        raftkv.Clerk(c.addrs).put("k", "v")
