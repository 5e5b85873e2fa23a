"""The ``raftkv`` command line: serve, get, put, delete, check, demo, bench, member, move-leader,
status, shard, sim.

Run ``raftkv COMMAND --help`` for each command's options. One module per command
(:mod:`raftkv.cli.serve`, :mod:`~raftkv.cli.kv` for get/put/delete, :mod:`~raftkv.cli.check`,
:mod:`~raftkv.cli.demo`, :mod:`~raftkv.cli.bench`, :mod:`~raftkv.cli.member` for member and
move-leader, :mod:`~raftkv.cli.status`, :mod:`~raftkv.cli.shard` for the shard controller,
:mod:`~raftkv.cli.sim` for a deterministic simulated run),
each with an ``add_parser`` that declares its options and a ``run`` that carries it out and
returns the exit code.

Exit codes: 0 success, 1 a definite "no" (missing key, refused conditional put, a history that
is not linearizable), 2 bad input (or an unknown verdict), 3 the cluster failed to answer, 130
interrupted.
"""

from __future__ import annotations

import argparse

import raftkv
from raftkv import procs
from raftkv.cli import bench, check, demo, kv, member, serve, shard, sim, status
from raftkv.cli._common import ADDRESSES_HELP, UsageError, err

__all__ = ["UsageError", "build_parser", "main"]

# Names older scripts imported from the one-file cli module; the public ones are in raftkv.procs.
_free_ports = procs.free_ports
_start_servers = procs.start_servers
_stop_servers = procs.stop_servers


def build_parser() -> argparse.ArgumentParser:
    """The ``raftkv`` argument parser, with every command."""
    p = argparse.ArgumentParser(
        prog="raftkv",
        description="raftkv: a linearizable key/value store on Raft. " + ADDRESSES_HELP,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {raftkv.__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    serve.add_parser(sub)
    kv.add_parsers(sub)
    check.add_parser(sub)
    demo.add_parser(sub)
    bench.add_parser(sub)
    member.add_parsers(sub)
    status.add_parser(sub)
    shard.add_parsers(sub)
    sim.add_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``raftkv`` command: parses ``argv`` (default: ``sys.argv[1:]``), runs
    the command and returns its exit code; errors become one line on stderr."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code: int = args.func(args)
        return code
    except UsageError as e:
        err(str(e))
        return 2
    except KeyboardInterrupt:
        err("interrupted")
        return 130
    except raftkv.Timeout as e:
        err(f"timeout: {e}")
        return 3
    except raftkv.Error as e:
        err(f"{type(e).__name__}: {e}")
        return 3
    except ValueError as e:
        err(str(e))
        return 2
