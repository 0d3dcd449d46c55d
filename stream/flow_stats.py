"""The worker's side of flow context (issue #15): FlowStats records from the agents, checked
at the door (undecodable or malformed ones are counted and dead-lettered, never raised),
kept per flow and host for the web view, joined with the latency window of the same flow
and interval start, and handed to the sink.

The join is by (flow name, window start): the agents align their intervals on the wall
clock as the windows are, so a closed window and the records of its start describe the same
second. Records wait here (bounded) for their window; a window's latency figures come from
the pipeline's newest closed windows.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from latscope.schemas import codec
from latscope.stream.flows import FlowResolver

KEEP_INTERVALS = 120     # per flow and host: the newest records kept for the join and views


@dataclass
class FlowStatsCounters:
    flow_stats_in: int = 0
    flow_stats_bad: int = 0


class FlowContext:
    """Newest FlowStats per (flow name, host), by interval start."""

    def __init__(self, resolver: FlowResolver, dead_letter: Callable[[bytes, str], None],
                 write: Callable[[dict, str], None] | None = None) -> None:
        self.resolver = resolver
        self.dead_letter = dead_letter
        self.write = write
        self.counters = FlowStatsCounters()
        self.by_flow: dict[str, dict[str, OrderedDict[int, dict]]] = {}

    def on_message(self, value: bytes) -> None:
        try:
            _, rec = codec.decode(value, expect="FlowStats")
            if rec["duration_ns"] <= 0 or rec["interval_ns"] <= 0:
                raise codec.DecodeError("FlowStats: duration_ns and interval_ns must be > 0")
        except codec.DecodeError as e:
            self.counters.flow_stats_bad += 1
            self.dead_letter(value, str(e))
            return
        self.counters.flow_stats_in += 1
        name = self.resolver.resolve(rec["flow"], rec["flow_id"]).name
        hosts = self.by_flow.setdefault(name, {})
        recs = hosts.setdefault(rec["host"], OrderedDict())
        recs[rec["interval_start_ns"]] = rec
        while len(recs) > KEEP_INTERVALS:
            recs.popitem(last=False)
        if self.write is not None:
            self.write(rec, name)

    def joined(self, flow: str, window_start: int) -> dict[str, dict]:
        """host -> the flow's record of the interval starting at window_start."""
        return {h: _summary(recs[window_start])
                for h, recs in self.by_flow.get(flow, {}).items() if window_start in recs}

    def latest(self, flow: str) -> dict[str, dict]:
        return {h: _summary(next(reversed(recs.values())))
                for h, recs in self.by_flow.get(flow, {}).items() if recs}


def _summary(rec: Mapping[str, Any]) -> dict[str, Any]:
    """A record as the web view shows it: rates in bit/s next to the counts."""
    secs = rec["duration_ns"] / 1e9
    out = {k: v for k, v in rec.items() if k not in ("flow", "flow_id", "host")}
    out["app_tx_bps"] = round(rec["app_bytes_written"] * 8 / secs)
    out["app_rx_bps"] = round(rec["app_bytes_read"] * 8 / secs)
    out["retrans_rate"] = rec["retrans_segs"] / rec["dev_segs_tx"] if rec["dev_segs_tx"] else 0.0
    return out
