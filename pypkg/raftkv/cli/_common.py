"""What the commands share: usage errors, address lists, argument types, the error line."""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from collections.abc import Callable

    Subparsers = argparse._SubParsersAction[argparse.ArgumentParser]

ADDRESSES_HELP = (
    "A node's client address is the host of its peer address with port + 1000 "
    "(--client-port-offset), unless --client-addrs names them."
)

ENDPOINTS_HELP = (
    "client addresses HOST:PORT[,HOST:PORT...] of any nodes of the cluster "
    "(default: $RAFTKV_ENDPOINTS). " + ADDRESSES_HELP
)


class UsageError(Exception):
    """Bad command-line input: ``main`` prints it as one line on stderr and exits 2."""


def parse_id_map(text: str, what: str) -> dict[int, str]:
    """Parses ``1=host:port,2=host:port`` into ``{1: "host:port", 2: "host:port"}``.

    ``what`` names the option in the :class:`UsageError` raised for a malformed or empty list.
    """
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


def endpoints(text: str | None) -> list[str]:
    """The client addresses of ``--endpoints`` (or of ``$RAFTKV_ENDPOINTS`` when not given)."""
    text = text or os.environ.get("RAFTKV_ENDPOINTS", "")
    eps = [e.strip() for e in text.split(",") if e.strip()]
    if not eps:
        raise UsageError(
            "no endpoints: give --endpoints HOST:PORT[,HOST:PORT...] "
            "(client addresses) or set RAFTKV_ENDPOINTS"
        )
    return eps


def err(msg: str) -> None:
    """Prints ``raftkv: msg`` on stderr."""
    print(f"raftkv: {msg}", file=sys.stderr, flush=True)


def workers(s: str) -> int:
    """argparse type: a tokio worker thread count, 1..256."""
    v = int(s)
    if not 1 <= v <= 256:
        raise argparse.ArgumentTypeError("must be 1..256")
    return v


def non_negative_float(s: str) -> float:
    """argparse type: a float >= 0."""
    v = float(s)
    if v < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return v


def add_client_tls_args(p: argparse.ArgumentParser) -> None:
    """Adds ``--tls-ca``, ``--tls-cert`` and ``--tls-key``: TLS to a cluster served with TLS."""
    p.add_argument(
        "--tls-ca", metavar="PEM", help="speak TLS; the CA that signs the servers' certificates"
    )
    p.add_argument("--tls-cert", metavar="PEM", help="this client's certificate (with --tls-key)")
    p.add_argument("--tls-key", metavar="PEM", help="this client's private key")
    p.add_argument(
        "--token-file", metavar="FILE", help="give the client token on this file's first line"
    )


def client_token(args: argparse.Namespace) -> str | None:
    """The Clerk's ``token`` from ``--token-file`` (None: no token)."""
    if not args.token_file:
        return None
    try:
        with open(args.token_file, encoding="utf-8") as f:
            return f.readline().rstrip("\r\n")
    except OSError as e:
        raise UsageError(f"--token-file: {e}") from None


def client_tls(args: argparse.Namespace) -> dict[str, str] | None:
    """The Clerk's ``tls`` argument from :func:`add_client_tls_args`' options (None: no TLS)."""
    if not args.tls_ca:
        if args.tls_cert or args.tls_key:
            raise UsageError("--tls-cert and --tls-key need --tls-ca")
        return None
    if bool(args.tls_cert) != bool(args.tls_key):
        raise UsageError("--tls-cert and --tls-key go together")
    tls = {"ca": args.tls_ca}
    if args.tls_cert:
        tls["cert"] = args.tls_cert
        tls["key"] = args.tls_key
    return tls


class Progress:
    """A one-line progress bar on stderr, drawn only when stderr is a terminal (silent when it
    is a pipe or a file, so logs and captured output get no control characters).

    ``total``: the amount that fills the bar (seconds, for the commands here); ``None`` draws
    no bar, only the elapsed amount and the note (a check with no timeout)."""

    WIDTH = 30

    def __init__(self, total: float | None, *, enabled: bool | None = None) -> None:
        self.total = total
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.drawn = False

    def update(self, done: float, note: str = "") -> None:
        """Redraws the line: ``done`` of ``total``, then ``note``."""
        if not self.enabled:
            return
        if self.total:
            filled = max(0, min(self.WIDTH, int(self.WIDTH * done / self.total)))
            bar = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done:5.1f}/{self.total:.0f} s"
        else:
            bar = f"{done:5.1f} s"
        sys.stderr.write(f"\r\x1b[K{bar} {note}".rstrip())
        sys.stderr.flush()
        self.drawn = True

    def close(self) -> None:
        """Ends the line, if one was drawn."""
        if self.drawn:
            sys.stderr.write("\n")
            sys.stderr.flush()
            self.drawn = False

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


T = TypeVar("T")


def with_progress(total: float | None, note: str, work: Callable[[], T]) -> T:
    """Runs ``work()`` (a call that releases the GIL, like a linearizability check) while a
    :class:`Progress` line shows the time it has taken against ``total`` (its timeout, if
    any); nothing is drawn when stderr is not a terminal."""
    bar = Progress(total)
    if not bar.enabled:
        return work()
    finished = threading.Event()
    start = time.monotonic()

    def tick() -> None:
        while not finished.wait(0.2):
            bar.update(time.monotonic() - start, note)

    ticker = threading.Thread(target=tick, daemon=True)
    ticker.start()
    try:
        return work()
    finally:
        finished.set()
        ticker.join()
        bar.close()
