"""Synthetic per-host LayerEvent records of known truth, for tests and benchmarks.

A byte crosses sender → forwarders → receiver; each host stamps the points it would stamp
with its own (offset) clock. Durations are known, so the breakdown can be checked exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from latscope.schemas.records import flow_id

SENDER = (("sock_send", None), ("tcp_tx", None), ("ip_out", None), ("ip_post", None),
          ("dev_queue", "eth0"), ("dev_xmit", "eth0"))
FORWARDER = (("dev_rx", "eth0"), ("ip_pre", None), ("ip_post", None),
             ("dev_queue", "eth1"), ("dev_xmit", "eth1"))
RECEIVER = (("dev_rx", "eth0"), ("ip_pre", None), ("ip_in", None), ("tcp_rx", None),
            ("sock_recv", None))


@dataclass(frozen=True)
class PathSpec:
    hosts: Sequence[str]                       # sender first, receiver last
    step_ns: int = 10_000                      # every point-to-point duration
    offsets_ns: Mapping[str, int] | None = None   # host clock minus reference
    flow: Mapping | None = None
    # each point-to-point duration in path order (len(points()) - 1 of them), instead of
    # one step_ns for all: irregular durations catch a wrong pairing of timestamps
    steps_ns: Sequence[int] | None = None

    def flow_key(self) -> dict:
        return dict(self.flow or {"proto": "tcp", "family": 4, "src": "10.1.0.1",
                                   "dst": "10.2.0.2", "sport": 40000, "dport": 5201})

    def points(self) -> list[tuple[str, str, str | None]]:
        out = []
        for i, h in enumerate(self.hosts):
            spec = SENDER if i == 0 else RECEIVER if i == len(self.hosts) - 1 else FORWARDER
            out.extend((h, p, d) for p, d in spec)
        return out

    def at_ns(self) -> list[int]:
        """Each point's time after the first."""
        n = len(self.points())
        steps = list(self.steps_ns) if self.steps_ns is not None else [self.step_ns] * (n - 1)
        if len(steps) != n - 1:
            raise ValueError(f"steps_ns: {len(steps)} durations for {n} points")
        out = [0]
        for d in steps:
            out.append(out[-1] + d)
        return out

    def end_to_end_ns(self) -> int:
        return self.at_ns()[-1]


def sample_records(spec: PathSpec, seq: int, t0_ref_ns: int) -> list[dict]:
    """One record per host for the byte ``seq`` whose sock_send happened at t0 (reference)."""
    flow = spec.flow_key()
    fid = flow_id(flow)
    offsets = spec.offsets_ns or {}
    by_host: dict[str, list[dict]] = {}
    for at, (h, point, dev) in zip(spec.at_ns(), spec.points(), strict=True):
        ts = t0_ref_ns + at + offsets.get(h, 0)
        by_host.setdefault(h, []).append(
            {"point": point, "ts_ns": ts, "ifindex": 2 if dev else 0, "dev": dev,
             "netns": 0, "cpu": 0, "wait": None})
    return [{"schema_version": 2, "host": h, "flow_id": fid, "flow": flow, "seq": seq,
             "retrans": False, "complete": True, "hits": hits}
            for h, hits in by_host.items()]


def clock_model(host: str, offset_ns: float, *, manager: str = "mgr", ref_ns: int = 0,
                bound_ns: float = 500.0) -> dict:
    """A ClockModel record (no drift) as the sync manager would publish it."""
    return {"schema_version": 1, "manager": manager, "host": host, "ref_ns": ref_ns,
            "offset_ns": float(offset_ns), "drift_ppm": 0.0, "error_bound_ns": bound_ns,
            "samples": 16, "min_delay_ns": 20_000.0, "updated_unix_ms": 0}


def encoded_batches(records: Sequence[dict], partitions: int,
                    per_message: int = 500) -> list[tuple[None, bytes, int]]:
    """(no key, LayerEventBatch, partition) messages as agents write them: one host's records
    of one partition together (several flows), in order, at most ``per_message`` a message,
    each in the partition of its records' flow ids."""
    from latscope.kafka import partition_of
    from latscope.schemas import codec

    groups: dict[tuple[str, int], list[dict]] = {}
    out: list[tuple[None, bytes, int]] = []

    def emit(host_part: tuple[str, int]) -> None:
        out.append((None, codec.encode("LayerEventBatch", {"events": groups.pop(host_part)}),
                    host_part[1]))

    for r in records:
        key = (r["host"], partition_of(r["flow_id"].encode(), partitions))
        group = groups.setdefault(key, [])
        group.append(r)
        if len(group) >= per_message:
            emit(key)
    for key in list(groups):
        emit(key)
    return out


def encoded(name: str, records: list[dict], key_field: str) -> list[tuple[bytes, bytes]]:
    """(key, Avro single-object value) pairs ready to produce."""
    from latscope.schemas import codec

    return [(r[key_field].encode(), codec.encode(name, r)) for r in records]
