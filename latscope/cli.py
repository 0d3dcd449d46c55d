"""The one console script. Each subcommand is a thin shell over library calls tests use directly.

Every stage registers its own subcommands (``register(subparsers)`` in its ``cli`` module),
so this file only assembles them.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

from latscope import __version__, log
from latscope.config import ConfigError
from latscope.errors import UserError

# Modules with a ``register(subparsers)``; order is the order of ``latscope --help``.
COMMAND_MODULES = (
    "latscope.stack.cli",        # stack up|down|status
    "latscope.config_cli",       # config check
    "latscope.lab.topology_cli",     # topology check|up
    "latscope.producers.cli",    # agent, doctor
    "latscope.sync.cli",         # sync manager|responder|status
    "latscope.stream.cli",       # stream worker
    "latscope.sinks.cli",        # report
    "latscope.fleet.cli",        # fleet up|status|down|logs
    "latscope.lab.demo_cli",         # demo
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="latscope",
        description="Where does my network latency go? Per-layer, per-hop latency of real "
                    "traffic from eBPF probes, joined across hosts on Kafka.")
    parser.add_argument("--version", action="version", version=f"latscope {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as e:
            if e.name != name:
                raise
            continue  # a stage not built yet
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    log.setup(args.verbose)
    # SIGINT stops every command, however it was started: a shell starting a command in the
    # background without job control leaves SIGINT ignored, and Python then keeps it so (a CI
    # run's demo ran to its end through a SIGINT; the agent and sync set their own handlers).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except (UserError, ConfigError) as e:   # a bad config is a user error wherever it surfaces
        print(f"latscope: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
