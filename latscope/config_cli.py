"""`latscope config check PATH`: validate and show the resolved topology."""

from __future__ import annotations

import argparse
import json
import sys

from latscope.config import Config, ConfigError, load
from latscope.errors import UserError


def resolved(config: Config) -> dict:
    """Who is a VM or container of whom, who the manager syncs, and the pipeline endpoints."""
    servers = []
    for s in config.servers:
        parent = config.server(s.parent_key) if s.parent_key is not None else None
        servers.append({
            "hostname": s.hostname, "address": s.address, "kind": s.kind,
            "parent": parent.hostname if parent else None, "eth": s.eth,
            "other_address": s.other_address, "container_address": s.container_address})
    by_addr = {a: s.hostname for s in config.servers for a in (s.address, *s.other_address)}
    sync = None
    if config.ping is not None:
        sync = {"manager": config.ping.management_server,
                "interval_s": config.time_sync.interval_s,
                "targets": [{"host": by_addr.get(t.address), "address": t.address,
                             "port": t.port, "eth": t.eth} for t in config.ping.servers]}
    return {
        "servers": servers,
        "manager": config.management.model_dump(exclude={"password"}) if config.management else None,
        "sync": sync,
        "sampling": {"stride_bytes": config.sampling.stride, "size": config.sampling.size,
                     "interval_s": config.sampling.interval, "ports": config.sampling.ports,
                     "filter_retrans": bool(config.sampling.filter_retrans)},
        "kafka": {"bootstrap": config.kafka.bootstrap, "settings": sorted(config.kafka.settings)},
        "influxdb": {"url": config.influxdb.url, "org": config.influxdb.org,
                     "bucket": config.influxdb.bucket,
                     "token": "set" if (config.influxdb.token or config.influxdb.token_file)
                     else "missing"},
    }


def cmd_check(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.path)
    except ConfigError as e:
        raise UserError(f"invalid configuration:\n{e}") from None
    view = resolved(loaded.config)
    if args.json:
        print(json.dumps({**view, "sources": {k: str(v) for k, v in loaded.sources.items()},
                          "notes": loaded.notes, "warnings": loaded.warnings}, indent=2))
        return 0
    for note in loaded.notes:
        print(f"note: {note}")
    for warning in loaded.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for s in view["servers"]:
        role = f"{s['kind']} of {s['parent']}" if s["parent"] else s["kind"]
        print(f"{s['hostname']:14} {s['address']:16} {role:20} eth={','.join(s['eth']) or '-'}")
    if view["sync"]:
        sync = view["sync"]
        print(f"sync: manager {sync['manager']} every {sync['interval_s']}s -> " + ", ".join(
            f"{t['host'] or '?'}@{t['address']}:{t['port']}" for t in sync["targets"]))
    sampling = view["sampling"]
    print(f"sampling: one byte every {sampling['stride_bytes']} bytes, ports "
          f"{sampling['ports'] or 'all'}, windows of {sampling['interval_s']}s, retransmissions "
          f"{'dropped' if sampling['filter_retrans'] else 'kept'}")
    print(f"kafka: {view['kafka']['bootstrap']}   influxdb: {view['influxdb']['url']} "
          f"(org {view['influxdb']['org']}, bucket {view['influxdb']['bucket']}, "
          f"token {view['influxdb']['token']})")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="check a configuration",
                       description="Configuration: a conf/ directory of the original format "
                                   "and/or a single latscope.yaml.")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    q = csub.add_parser("check", help="validate and print the resolved topology",
                        description="Validate a conf directory or latscope.yaml; errors name "
                                    "the file, the field, the bad value and what was expected.")
    q.add_argument("path", help="conf directory or latscope.yaml")
    q.add_argument("--json", action="store_true", help="machine-readable output")
    q.set_defaults(func=cmd_check)
