"""Where the InfluxDB sink writes: its settings, and how the CLI finds them (the config
file's ``influxdb`` section, else the running local stack)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field


@dataclass
class InfluxSettings:
    url: str
    org: str
    bucket: str
    token: str
    tags: dict[str, str] = field(default_factory=dict)   # added to every point
    flush_interval_ms: int = 250
    max_retries: int = 5
    retry_interval_s: float = 1.0       # first backoff; doubles up to max_retry_delay_s
    max_retry_delay_s: float = 15.0
    max_retry_time_s: float = 60.0
    max_pending_lines: int = 2_000_000  # while InfluxDB is away; the oldest beyond are failed


def influx_from(args: argparse.Namespace, config: object | None) -> InfluxSettings | None:
    """InfluxDB settings: the config file's, else the running local stack's; None if off."""
    from latscope.errors import UserError

    if args.no_influx:
        return None
    tags = {}
    for kv in args.influx_tag or ():
        k, sep, v = kv.partition("=")
        if not sep or not k or not v:
            raise UserError(f"--influx-tag {kv!r}: expected KEY=VALUE")
        tags[k] = v
    if config is not None:
        db = config.influxdb   # type: ignore[attr-defined]
        token = db.token_value()
        if not token:
            raise UserError("influxdb: no token or token_file in the config (or pass --no-influx)")
        return InfluxSettings(db.url, db.org, db.bucket, token, tags)
    from latscope.stack import services as stack

    info = stack.status(stack.StackSettings.from_env())
    if not info.influx_up or not info.influx_token:
        raise UserError(f"InfluxDB at {info.influx_url} is not up: run `latscope stack up`, "
                        "give --config, or pass --no-influx")
    return InfluxSettings(info.influx_url, info.influx_org, info.influx_bucket, info.influx_token,
                          tags)
