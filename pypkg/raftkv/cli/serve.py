"""``raftkv serve``: run one node until SIGINT or SIGTERM.

Log: the node's log (leader changes, elections, snapshots, storage recovery, connection
errors, failures) goes to stderr, one line per event, as text or JSON lines (``--log-format``),
filtered by the ``RAFTKV_LOG`` environment variable (``tracing`` ``EnvFilter`` syntax:
``debug``, ``warn,raftkv_transport_tcp=debug``...; default ``info``).

Signals: SIGTERM or SIGINT stop the node promptly in every state (starting, serving, after a
failure) and the process exits 0; a second signal while stopping exits at once. With TLS,
SIGHUP reads the certificate, key and CA files again (new connections use them; a file that
fails to load is logged and the certificates in force stay). (A signal
that comes before the interpreter has loaded this module ends the process by that signal.)

Exit codes (:data:`EXIT_CODES`):

- 0: stopped by SIGTERM or SIGINT (in any state, a start in progress included).
- 1: the node stopped itself while serving (fail-stop: its storage failed, e.g. a full disk);
  the cause is on stderr, so that a supervisor restarts the node or alerts.
- 2: bad options (or a malformed ``RAFTKV_LOG``).
- 3: the node could not start (an address in use, a data directory locked by another process,
  unreadable storage, no room for the WAL, or with ``--join``: the cluster did not add it);
  reported at once.

Metrics: ``--metrics-addr HOST:PORT`` serves the node's Prometheus metrics (OpenMetrics text,
see ``raftkv.Node.metrics``) at ``http://HOST:PORT/metrics``.

A sharded store (``--role``): ``--role controller`` runs a node of the shard controller's
Raft group, ``--role group --gid GID --controller ENDPOINTS`` a member of replica group GID;
each group (and the controller) is its own Raft cluster, with its own ``--peers``. Give the
controller and every group the same ``--shards``. Then ``raftkv shard join GID=ENDPOINTS``
hands shards to a group, and ``raftkv.ShardClerk(controller endpoints)`` reads and writes.

Joining a running cluster (``--join ENDPOINTS``): ``--peers`` then names this node only
(``--peers 4=HOST:PORT``); the node learns the members from one of the client addresses of
``--join``, asks the leader to add it as a learner, and the leader promotes it to voter once it
has caught up (``--learner``: it stays a learner). Keep ``--join`` when restarting such a node:
a node that already has the configuration in its log does not ask again. To shrink the
cluster, ``raftkv member remove ID --endpoints ...``, then stop the process.
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import sys
import threading
import time
from types import FrameType
from typing import TYPE_CHECKING

import raftkv
from raftkv.cli._common import ADDRESSES_HELP, UsageError, parse_id_map, workers

if TYPE_CHECKING:
    from raftkv.cli._common import Subparsers

#: ``raftkv serve``'s exit codes and what each means.
EXIT_CODES = {
    0: "stopped by SIGTERM or SIGINT",
    1: "the node stopped itself while serving (its storage failed): the cause is on stderr",
    2: "bad options (or a malformed RAFTKV_LOG)",
    3: "the node could not start (address in use, data directory locked, unreadable storage, "
    "no room for the WAL)",
}

#: How often the main thread checks for a signal or a failed node, in seconds.
POLL_S = 0.1


def _say(line: str) -> None:
    """One line on stderr, in one write: the Rust log's lines share stderr."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


class _Stop(Exception):
    """Raised by the signal handler to interrupt a start in progress."""


def add_parser(sub: Subparsers) -> None:
    """Adds ``serve`` and its options to the command line."""
    s = sub.add_parser(
        "serve",
        help="run one node until SIGINT/SIGTERM",
        description="Run one node (Raft over TCP, log on LMDB) until SIGINT or SIGTERM. "
        + ADDRESSES_HELP
        + " The log goes to stderr, filtered by the RAFTKV_LOG environment variable (EnvFilter"
        " syntax: debug, warn,raftkv_transport_tcp=debug...; default info). SIGTERM and SIGINT"
        " stop the node promptly in every state (exit 0). A node whose storage fails stops"
        " (fail-stop) and the process exits 1 with the cause on stderr. With --join ENDPOINTS the"
        " node joins a running cluster (as a learner, promoted once caught up).",
        epilog="exit codes: " + "; ".join(f"{c} {why}" for c, why in EXIT_CODES.items()),
    )
    s.add_argument("--id", type=int, required=True, help="this node's Raft id (a key of --peers)")
    s.add_argument(
        "--peers", required=True, help="every node's Raft address: 1=HOST:PORT,2=HOST:PORT,..."
    )
    s.add_argument(
        "--join",
        metavar="ENDPOINTS",
        help="join a running cluster: client addresses of some of its members, comma-separated "
        "(--peers then names this node only: ID=HOST:PORT)",
    )
    s.add_argument(
        "--learner",
        action="store_true",
        help="with --join: stay a learner (receive the log, never vote)",
    )
    s.add_argument("--data-dir", help="LMDB directory (required with --storage lmdb)")
    s.add_argument("--storage", choices=("lmdb", "memory"), default="lmdb")
    s.add_argument(
        "--lease-reads",
        action="store_true",
        help="the leader answers gets under a lease, without a heartbeat round (safe only if "
        "the nodes' clocks run within 10%% of each other's rate; give every node the same)",
    )
    s.add_argument(
        "--follower-reads",
        action="store_true",
        help="followers serve gets themselves with a read index from the leader (for Clerks "
        'with read_from="any"); still linearizable',
    )
    s.add_argument(
        "--state",
        choices=("memory", "lmdb"),
        default="memory",
        help="where the KV state lives: memory (default; rebuilt from the snapshot and log at "
        "start) or lmdb (in --data-dir: data larger than memory, restart without a rebuild; "
        "needs --storage lmdb)",
    )
    s.add_argument("--runtime", choices=("tokio", "smol"), default="tokio")
    s.add_argument(
        "--workers",
        type=workers,
        default=None,
        metavar="N",
        help="worker threads of the process's tokio runtime (default 2); 1 suits "
        "several nodes sharing a small machine",
    )
    s.add_argument(
        "--client-addrs",
        help="every node's client address: 1=HOST:PORT,... "
        "(default: peer port + --client-port-offset)",
    )
    s.add_argument(
        "--client-port-offset",
        type=int,
        default=1000,
        help="client port = peer port + this (default 1000)",
    )
    s.add_argument(
        "--snapshot-threshold", type=int, default=None, help="snapshot after this many log entries"
    )
    s.add_argument(
        "--trailing-log",
        type=int,
        default=None,
        help="log entries kept before a snapshot's point, so that a node a little behind catches "
        "up from the log instead of a whole-state snapshot (default 5000; 0: none)",
    )
    s.add_argument(
        "--tls-cert",
        metavar="PEM",
        help="this node's certificate (chain); with --tls-key and --tls-ca, peers use mutual "
        "TLS and clients TLS. It must name the host of this node's peer and client addresses",
    )
    s.add_argument("--tls-key", metavar="PEM", help="this node's private key")
    s.add_argument(
        "--tls-ca",
        metavar="PEM",
        help="the CA that signs every node's certificate (peers check each other against it)",
    )
    s.add_argument(
        "--tls-client-ca",
        metavar="PEM",
        help="require clients to present a certificate this CA signed (default: none asked)",
    )
    s.add_argument(
        "--client-token-file",
        metavar="FILE",
        help="require clients to give the token on this file's first line "
        "(raftkv get/put/... --token-file; Clerk(..., token=...))",
    )
    s.add_argument(
        "--data-bytes-max",
        type=int,
        default=None,
        metavar="BYTES",
        help="refuse writes that would take this node's data (keys, values, 32 bytes a key) past "
        "BYTES (default and most 536870912: 512 MiB; with --state lmdb 8589934592: 8 GiB); give "
        "every node the same bound",
    )
    s.add_argument(
        "--metrics-addr",
        metavar="HOST:PORT",
        default=None,
        help="serve the node's Prometheus metrics over HTTP at http://HOST:PORT/metrics",
    )
    s.add_argument(
        "--role",
        choices=("kv", "controller", "group"),
        default="kv",
        help="what the node serves: kv (default: the key/value store, for raftkv get/put and "
        "Clerk); controller (a node of a sharded store's shard controller); group (a member of "
        "replica group --gid of a sharded store, for ShardClerk). Join groups with raftkv shard "
        "join",
    )
    s.add_argument("--gid", type=int, default=None, help="with --role group: the group's id (>= 1)")
    s.add_argument(
        "--controller",
        metavar="ENDPOINTS",
        default=None,
        help="with --role group: client addresses of the shard controller's nodes, comma-separated",
    )
    s.add_argument(
        "--shards",
        type=int,
        default=None,
        help="with --role controller or group: the number of shards (default 256), fixed for "
        "the store's life; give the controller and every group the same",
    )
    s.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="the log on stderr: text lines or JSON lines (default text); RAFTKV_LOG filters it",
    )
    s.set_defaults(func=run)


#: The Content-Type of the metrics page (prometheus-client writes OpenMetrics text).
METRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"


def start_metrics_server(addr: str, node: raftkv.Node) -> http.server.ThreadingHTTPServer:
    """Serves ``node.metrics()`` at ``http://addr/metrics`` on a daemon thread; returns the
    server (``shutdown()`` stops it). Raises ValueError for a malformed address, OSError when
    it cannot be bound."""
    host, sep, port = addr.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT, not {addr!r}")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.split("?")[0] not in ("/metrics", "/"):
                self.send_error(404, "the metrics are at /metrics")
                return
            try:
                body = node.metrics().encode()
            except raftkv.Error as e:
                self.send_error(503, str(e))
                return
            self.send_response(200)
            self.send_header("Content-Type", METRICS_CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes are not worth a log line each

    server = http.server.ThreadingHTTPServer((host.strip("[]") or "0.0.0.0", int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="raftkv-metrics", daemon=True).start()
    return server


def run(args: argparse.Namespace) -> int:
    """Starts the node, serves until SIGINT or SIGTERM (0) or until the node stops itself after
    a failure (1), stops it; returns the exit code (see :data:`EXIT_CODES`)."""
    stop = threading.Event()
    state = {"starting": True, "stopping": False}

    def on_signal(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        if state["stopping"]:
            # A second signal while stopping: leave now, the stop was asked for.
            os._exit(0)
        stop.set()
        if state["starting"]:
            raise _Stop

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        return _serve(args, stop, state)
    except _Stop:
        _say(f"raftkv: node {args.id} stopped while starting")
        return 0


def _shard_role_options(args: argparse.Namespace, join: list[str] | None) -> list[str] | None:
    """Checks the options of ``--role``; returns ``--controller``'s addresses (None unless
    ``--role group``)."""
    if args.role != "group" and (args.gid is not None or args.controller is not None):
        raise UsageError("--gid and --controller go with --role group")
    if args.role == "kv" and args.shards is not None:
        raise UsageError("--shards goes with --role controller or group")
    if args.role != "kv" and (join or args.tls_cert or args.client_token_file):
        raise UsageError(f"--role {args.role} takes no --join, TLS or --client-token-file")
    if args.role != "group":
        return None
    if args.gid is None or args.gid < 1:
        raise UsageError("--role group needs --gid GID (>= 1)")
    controller = [a.strip() for a in (args.controller or "").split(",") if a.strip()]
    if not controller:
        raise UsageError("--role group needs --controller HOST:PORT[,HOST:PORT...]")
    return controller


def _serve(args: argparse.Namespace, stop: threading.Event, state: dict[str, bool]) -> int:
    peers = parse_id_map(args.peers, "--peers")
    client_addrs = parse_id_map(args.client_addrs, "--client-addrs") if args.client_addrs else None
    if args.id not in peers:
        raise UsageError(f"--id {args.id} is not among --peers ({sorted(peers)})")
    if args.storage == "lmdb" and not args.data_dir:
        raise UsageError("--data-dir is required with --storage lmdb")
    if args.state == "lmdb" and (args.storage != "lmdb" or args.role != "kv"):
        raise UsageError("--state lmdb needs --storage lmdb (and --role kv)")
    join = [a.strip() for a in args.join.split(",") if a.strip()] if args.join else None
    if args.join is not None and not join:
        raise UsageError("--join needs at least one client address")
    if join and len(peers) != 1:
        raise UsageError("with --join, --peers names this node only (ID=HOST:PORT)")
    if args.learner and not join:
        raise UsageError("--learner only goes with --join")
    tls = (args.tls_cert, args.tls_key, args.tls_ca)
    if any(tls) and not all(tls):
        raise UsageError("TLS needs --tls-cert, --tls-key and --tls-ca together")
    if args.tls_client_ca and not all(tls):
        raise UsageError("--tls-client-ca needs --tls-cert, --tls-key and --tls-ca")
    controller = _shard_role_options(args, join)
    try:
        raftkv._raftkv._log_to_stderr(args.log_format)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if args.workers is not None:
        # Read once, when the runtime starts: nothing has started it yet in this process.
        os.environ["RAFTKV_TOKIO_WORKERS"] = str(args.workers)
    try:
        node = raftkv.Node(
            id=args.id,
            peers=peers,
            data_dir=args.data_dir,
            storage=args.storage,
            state=args.state,
            runtime=args.runtime,
            client_addrs=client_addrs,
            client_port_offset=args.client_port_offset,
            snapshot_threshold=args.snapshot_threshold,
            trailing_log=args.trailing_log,
            lease_reads=args.lease_reads,
            follower_reads=args.follower_reads,
            join=join,
            join_as_learner=args.learner,
            data_bytes_max=args.data_bytes_max,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            tls_ca=args.tls_ca,
            tls_client_ca=args.tls_client_ca,
            client_token_file=args.client_token_file,
            role=args.role,
            gid=args.gid,
            controller=controller,
            shards=args.shards,
        )
    except (ValueError, TypeError) as e:
        raise UsageError(str(e)) from None

    try:
        node.start()
    except raftkv.ClusterError as e:
        _say(f"raftkv: node {args.id} cannot start: {e}")
        return 3
    state["starting"] = False
    if stop.is_set():
        # The signal came between the end of start() and now.
        node.stop()
        return 0
    metrics = None
    if args.metrics_addr:
        try:
            metrics = start_metrics_server(args.metrics_addr, node)
        except (OSError, ValueError) as e:
            node.stop()
            _say(f"raftkv: node {args.id} cannot serve metrics at {args.metrics_addr}: {e}")
            return 3
        host, port = str(metrics.server_address[0]), int(metrics.server_address[1])
        _say(f"raftkv: node {args.id} metrics at http://{host}:{port}/metrics")
    reload = threading.Event()
    if args.tls_cert:
        # SIGHUP: read the TLS files again (certificates renewed in place), keep serving.
        signal.signal(signal.SIGHUP, lambda _signum, _frame: reload.set())
    where = f", {args.data_dir}" if args.data_dir else ""
    where += ", TLS (SIGHUP reloads the certificates)" if args.tls_cert else ""
    role = {"kv": "", "controller": "shard controller ", "group": f"group {args.gid} "}[args.role]
    _say(
        f"raftkv: {role}node {args.id} serving: raft {node.peer_addr}, clients {node.client_addr}"
        f" ({args.storage}{where})"
    )
    failure = None
    while not stop.wait(POLL_S):
        failure = node.failure
        if failure is not None:
            break
        if reload.is_set():
            reload.clear()
            try:
                node.reload_tls()
                _say(f"raftkv: node {args.id} reloaded its TLS certificates (SIGHUP)")
            except raftkv.ClusterError as e:
                _say(f"raftkv: node {args.id} kept its TLS certificates: the reload failed: {e}")
    state["stopping"] = True
    started = time.monotonic()
    if metrics is not None:
        metrics.shutdown()
        metrics.server_close()
    node.stop()
    if failure is not None:
        _say(f"raftkv: node {args.id} failed and stopped (fail-stop): {failure}")
        return 1
    _say(f"raftkv: node {args.id} stopped ({time.monotonic() - started:.1f} s)")
    return 0
