"""TLS from Python (issue 21, Security): nodes started with certificates made at test time by
the ``openssl`` command serve a ``Clerk(tls=...)`` (threaded and asyncio), refuse a plaintext
Clerk, and ``raftkv serve`` checks its TLS flags. Also the store's size bound
(``data_bytes_max``, issue 21 #8) as Python sees it: ``raftkv.StoreFull``.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from conftest import raftkv_cli
from test_node import OFFSET, free_ports

import raftkv

if shutil.which("openssl") is None:
    if os.environ.get("CI") == "true":
        raise RuntimeError("the TLS tests need the openssl command (apt-get install openssl)")
    pytest.skip("the openssl command is not installed", allow_module_level=True)


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


def make_ca(d: Path, name: str) -> Path:
    """A self-signed CA: writes NAME.pem and NAME.key, returns the certificate's path."""
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-days", "2", "-subj", f"/CN={name}", "-keyout", d / f"{name}.key",
        "-out", d / f"{name}.pem",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=keyCertSign",
    )  # fmt: skip
    return d / f"{name}.pem"


def issue(d: Path, ca: Path, name: str) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 signed by ``ca``: returns (certificate, key) paths."""
    key, csr, cert = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.pem"
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-subj", f"/CN={name}", "-keyout", key, "-out", csr,
    )  # fmt: skip
    ext = d / f"{name}.ext"
    ext.write_text(
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n"
        "basicConstraints=CA:FALSE\n"
    )
    _openssl(
        "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca.with_suffix(".key"),
        "-CAcreateserial", "-days", "2", "-out", cert, "-extfile", ext,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_cluster(tmp_path):
    """Three TLS nodes (memory storage); yields (client addresses, CA path, directory)."""
    ca = make_ca(tmp_path, "cluster-ca")
    ports = free_ports(3)
    peers = {i + 1: f"127.0.0.1:{p}" for i, p in enumerate(ports)}
    nodes = []
    try:
        for i in peers:
            cert, key = issue(tmp_path, ca, f"n{i}")
            node = raftkv.Node(i, peers, storage="memory", tls_cert=cert, tls_key=key, tls_ca=ca)
            node.start()
            nodes.append(node)
        yield [f"127.0.0.1:{p + OFFSET}" for p in ports], ca, tmp_path
    finally:
        for node in nodes:
            node.stop()


def test_clerk_with_tls_is_served_by_mutual_tls_nodes(tls_cluster):
    addrs, ca, _ = tls_cluster
    clerk = raftkv.Clerk(addrs, timeout=15, tls={"ca": ca})
    assert clerk.put("k", "over tls") == 1
    assert clerk.get("k") == (b"over tls", 1)


def test_aio_clerk_with_tls_is_served(tls_cluster):
    addrs, ca, _ = tls_cluster

    async def main() -> tuple[bytes, int]:
        async with raftkv.aio.Clerk(addrs, timeout=15, tls={"ca": str(ca)}) as clerk:
            await clerk.put("a", "1")
            return await clerk.get("a")

    assert asyncio.run(main()) == (b"1", 1)


def test_a_plaintext_clerk_is_refused_not_left_hanging(tls_cluster):
    addrs, _, _ = tls_cluster
    started = time.monotonic()
    with pytest.raises(raftkv.Timeout):
        raftkv.Clerk(addrs, timeout=1.5).put("k", "plain")
    assert time.monotonic() - started < 5


def test_a_clerk_that_trusts_another_ca_is_refused(tls_cluster):
    addrs, _, d = tls_cluster
    other = make_ca(d, "other-ca")
    with pytest.raises(raftkv.Timeout):
        raftkv.Clerk(addrs, timeout=1.5, tls={"ca": other}).put("k", "v")


def test_bad_tls_arguments_are_value_errors(tmp_path):
    ca = make_ca(tmp_path, "ca")
    with pytest.raises(ValueError, match="unknown key"):
        raftkv.Clerk(["127.0.0.1:1"], tls={"ca": ca, "crt": ca})
    with pytest.raises(ValueError, match="both"):
        raftkv.Clerk(["127.0.0.1:1"], tls={"ca": ca, "cert": ca})
    with pytest.raises(ValueError, match='needs "ca"'):
        raftkv.Clerk(["127.0.0.1:1"], tls={})
    with pytest.raises(ValueError, match=r"missing\.pem"):
        raftkv.Clerk(["127.0.0.1:1"], tls={"ca": tmp_path / "missing.pem"})
    with pytest.raises(TypeError):
        raftkv.Clerk(["127.0.0.1:1"], tls=str(ca))
    with pytest.raises(ValueError, match="together"):
        raftkv.Node(1, {1: "127.0.0.1:1"}, storage="memory", tls_cert=ca)


def test_serve_refuses_partial_tls_flags(tmp_path):
    r = subprocess.run(
        [
            *raftkv_cli(), "serve", "--id", "1", "--peers", "1=127.0.0.1:1",
            "--storage", "memory", "--tls-cert", str(tmp_path / "c.pem"),
        ],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert r.returncode == 2, r.stderr
    assert "--tls-cert, --tls-key and --tls-ca together" in r.stderr


def test_store_full_is_raised_before_a_write_past_data_bytes_max_is_acknowledged():
    with raftkv.LocalCluster(3, storage="memory", data_bytes_max=20_000) as c:
        clerk = raftkv.Clerk(c.addrs, timeout=10)
        written = 0
        with pytest.raises(raftkv.StoreFull) as e:
            while written < 100:
                clerk.put(f"key{written:03}", b"v" * 1000)
                written += 1
        assert isinstance(e.value, raftkv.TooLarge)
        assert "data_bytes_max" in str(e.value)
        assert written == 20_000 // (6 + 1000 + 32)
        with pytest.raises(raftkv.KeyNotFound):
            clerk.get(f"key{written:03}")
        clerk.delete("key000")
        clerk.put("fresh", b"v" * 1000)
    with pytest.raises(ValueError, match="data_bytes_max"):
        raftkv.LocalCluster(1, storage="memory", data_bytes_max=0)


def test_a_node_with_a_client_token_serves_only_clerks_that_give_it(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("s3cret-token\nignored second line\n")
    (port,) = free_ports(1)
    node = raftkv.Node(1, {1: f"127.0.0.1:{port}"}, storage="memory", client_token_file=token_file)
    node.start()
    try:
        addr = [f"127.0.0.1:{port + OFFSET}"]
        clerk = raftkv.Clerk(addr, timeout=10, token="s3cret-token")
        assert clerk.put("k", "v") == 1
        for wrong in (None, "s3cret-tokem", "s3cret", "s3cret-token\nignored second line"):
            with pytest.raises(raftkv.Unauthorized):
                raftkv.Clerk(addr, timeout=10, token=wrong).put("k", "w")
        assert clerk.get("k") == (b"v", 1)

        async def main() -> tuple[bytes, int]:
            async with raftkv.aio.Clerk(addr, timeout=10, token="s3cret-token") as aio_clerk:
                return await aio_clerk.get("k")

        assert asyncio.run(main()) == (b"v", 1)
        # The command line reads the token from a file too.
        get = [*raftkv_cli(), "get", "k", "--endpoints", addr[0], "--timeout", "10"]
        r = subprocess.run(
            [*get, "--token-file", str(token_file)], capture_output=True, text=True, timeout=60
        )
        assert r.returncode == 0, r.stderr
        assert r.stdout == "v\n"
        r = subprocess.run(get, capture_output=True, text=True, timeout=60)
        assert r.returncode != 0
        assert "token" in r.stderr
    finally:
        node.stop()
    with pytest.raises(ValueError, match="client token"):
        raftkv.Clerk(addr, token="")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="client_token_file"):
        raftkv.Node(1, {1: "127.0.0.1:1"}, storage="memory", client_token_file=tmp_path / "empty")


def test_serve_reloads_its_certificates_on_sighup(tmp_path):
    """Certificates renewed in place (here: reissued by a new CA) are used after SIGHUP,
    without a restart; a broken file is logged and the certificates in force stay."""
    from test_serve_process import serve

    old_ca, new_ca = make_ca(tmp_path, "old-ca"), make_ca(tmp_path, "new-ca")
    cert, key = issue(tmp_path, old_ca, "n1")
    ca = tmp_path / "ca.pem"
    ca.write_bytes(old_ca.read_bytes())
    flags = ("--tls-cert", str(cert), "--tls-key", str(key), "--tls-ca", str(ca))
    with serve(*flags) as s:
        s.wait_for("serving")
        addr = [f"127.0.0.1:{s.client}"]
        assert raftkv.Clerk(addr, timeout=10, tls={"ca": old_ca}).put("k", "old") == 1
        issue(tmp_path, new_ca, "n1")  # the same files, now signed by the new CA
        ca.write_bytes(new_ca.read_bytes())
        s.proc.send_signal(signal.SIGHUP)
        s.wait_for("reloaded its TLS certificates")
        assert raftkv.Clerk(addr, timeout=10, tls={"ca": new_ca}).put("k", "new") == 2
        with pytest.raises(raftkv.Timeout):
            raftkv.Clerk(addr, timeout=1.5, tls={"ca": old_ca}).get("k")
        key.write_text("not a key\n")
        s.proc.send_signal(signal.SIGHUP)
        s.wait_for("the reload failed")
        assert raftkv.Clerk(addr, timeout=10, tls={"ca": new_ca}).get("k") == (b"new", 2)
        s.proc.send_signal(signal.SIGTERM)
        assert s.exit_code() == 0, s.stderr


def test_node_reload_tls_without_tls_is_an_error():
    (peer,) = free_ports(1)
    node = raftkv.Node(1, {1: f"127.0.0.1:{peer}"}, storage="memory")
    with node, pytest.raises(raftkv.ClusterError, match="without TLS"):
        node.reload_tls()
