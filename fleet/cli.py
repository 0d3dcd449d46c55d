"""``latscope fleet up | status | down | logs``: thin shells over ``fleet.rollout``."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from latscope import settings

if TYPE_CHECKING:
    from latscope.fleet.rollout import Fleet


def _fleet(args: argparse.Namespace) -> Fleet:
    from latscope.fleet.rollout import Fleet

    return Fleet(settings.config(args.conf), Path(args.conf),
                 accept_new=getattr(args, "accept_new", False))


def _report(outcomes: list, as_json: bool) -> int:
    ok = all(o.ok for o in outcomes)
    if as_json:
        print(json.dumps({"ok": ok, "hosts": [o.as_json() for o in outcomes]}, indent=1))
    else:
        for o in outcomes:
            print(f"{o.host:16} {'ok' if o.ok else 'FAILED'}"
                  + (f"  {o.reason}" if o.reason else ""))
    return 0 if ok else 1


def cmd_up(args: argparse.Namespace) -> int:
    return _report(_fleet(args).up(args.host, Path(args.wheel) if args.wheel else None),
                   args.json)


def cmd_status(args: argparse.Namespace) -> int:
    return _report(_fleet(args).status(args.host), args.json)


def cmd_down(args: argparse.Namespace) -> int:
    return _report(_fleet(args).down(args.host), args.json)


def cmd_logs(args: argparse.Namespace) -> int:
    from latscope.errors import UserError
    from latscope.fleet.ssh import HostError

    try:
        print(_fleet(args).logs(args.name, args.service, args.lines), end="")
    except HostError as e:
        raise UserError(f"{args.name}: {e}") from None
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fleet", help="deploy, watch and stop LatScope on every server over SSH",
                       description="Run on the management server with the conf directory "
                                   "(connect_info.yaml, management_server_info.yaml, "
                                   "time_sync.yaml, sampling_info.yaml, latscope.yaml).")
    fsub = p.add_subparsers(dest="fleet_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("up", cmd_up, "install, configure and start every server's agent and sync responder, "
                       "and the sync manager and stream worker here (idempotent)"),
        ("status", cmd_status, "per server: reachable, version, services, restarts, points; "
                               "here: the worker's counters, joined samples/s, lag and clock models"),
        ("down", cmd_down, "stop everything `up` started and check no LatScope BPF is left"),
    ):
        q = fsub.add_parser(name, help=text, description=text)
        q.add_argument("conf", help="conf directory (original format + latscope.yaml)")
        q.add_argument("--host", action="append", metavar="HOSTNAME",
                       help="only this server (repeatable; default: all)")
        q.add_argument("--json", action="store_true", help="machine-readable output")
        q.add_argument("--accept-new", action="store_true",
                       help="trust and record host keys not yet in known_hosts (a changed key "
                            "is refused all the same)")
        if name == "up":
            q.add_argument("--wheel", help="LatScope wheel to ship (default: build one from "
                                           "this checkout)")
        q.set_defaults(func=func)
    lg = fsub.add_parser("logs", help="the last lines of a service's log",
                         description="The last lines of a service's log on a server (agent, "
                                     "responder, supervisor) or here (`management`: "
                                     "sync-manager, stream-worker).")
    lg.add_argument("conf", help="conf directory")
    lg.add_argument("name", metavar="HOST", help="a server's hostname, or `management`")
    lg.add_argument("service", nargs="?", default="supervisor",
                    help="agent, responder, supervisor (default), sync-manager, stream-worker")
    lg.add_argument("-n", "--lines", type=int, default=50, help="lines (default 50)")
    lg.add_argument("--accept-new", action="store_true", help="as for up")
    lg.set_defaults(func=cmd_logs)
