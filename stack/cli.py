"""`latscope stack up|down|status`."""

from __future__ import annotations

import argparse
import json

from latscope.errors import UserError
from latscope.stack import services as stack
from latscope.stack.kafka import MissingTool


def _settings(args: argparse.Namespace) -> stack.StackSettings:
    return stack.StackSettings.from_env(
        cache=args.cache_dir, run_dir=args.run_dir, kafka_port=args.kafka_port,
        kafka_host=args.kafka_host,
        influx_port=args.influx_port, secure=getattr(args, "secure", False) or None)


def _print(info: stack.StackInfo, as_json: bool) -> None:
    if as_json:
        print(json.dumps(info.as_json(), indent=2))
        return
    for name, part in info.as_json().items():
        where = part.get("bootstrap") or part.get("url")
        state = "up" if part["up"] else "DOWN"
        managed = " (started by latscope)" if part["managed"] else ""
        security = f" {part['security']}" if part.get("security") else ""
        print(f"{name:9} {state:5} {where}{security}{managed}")
        for principal, path in part.get("client_configs", {}).items():
            print(f"  {principal:7} --config {path}")


def cmd_up(args: argparse.Namespace) -> int:
    try:
        info = stack.up(_settings(args))
    except MissingTool as e:
        raise UserError(str(e)) from None
    _print(info, args.json)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    stopped = stack.down(_settings(args))
    if args.json:
        print(json.dumps({"stopped": stopped}))
    else:
        for name, was in stopped.items():
            print(f"{name:9} {'stopped' if was else 'was not running'}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    info = stack.status(_settings(args))
    _print(info, args.json)
    return 0 if info.kafka_up and info.influx_up else 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("stack", help="the local Kafka + InfluxDB stack",
                       description="Provision (cached), start, stop and check a single-node "
                                   "Kafka (KRaft) and InfluxDB 2.7 under the cache directory.")
    ssub = p.add_subparsers(dest="stack_command", metavar="ACTION", required=True)
    for name, func, text in (
        ("up", cmd_up, "download/build what is missing, start both, onboard InfluxDB"),
        ("down", cmd_down, "stop the services latscope started"),
        ("status", cmd_status, "are they answering? (exit 1 if not)"),
    ):
        q = ssub.add_parser(name, help=text, description=text)
        q.add_argument("--json", action="store_true", help="machine-readable output")
        q.add_argument("--cache-dir", help="where builds live (default ~/.cache/latscope)")
        q.add_argument("--run-dir", help="service data and logs (default <cache>/run)")
        q.add_argument("--kafka-port", type=int, help="broker port (default 9092)")
        q.add_argument("--kafka-host", metavar="ADDRESS",
                       help="address the broker listens on and advertises (default 127.0.0.1; "
                            "a routable one for agents on other hosts: `latscope fleet`)")
        q.add_argument("--influx-port", type=int, help="InfluxDB port (default 8086)")
        if name == "up":
            q.add_argument("--secure", action="store_true",
                           help="Kafka with SASL/SCRAM over TLS, ACLs per principal (agent, "
                                "sync, worker, reader) and no topic auto-creation; writes a "
                                "client config per principal (README: Secure Kafka). A run "
                                "directory made secure stays secure.")
        q.set_defaults(func=func)
