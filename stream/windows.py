"""Tumbling-window statistics per (source host, destination host, flow, segment).

A breakdown belongs to the window of its own time (the first point on the reference clock,
mapped to wall time), so replaying input after a crash rebuilds the same windows and the
idempotent InfluxDB writes overwrite rather than duplicate. A window closes ``lateness_s``
after its end; a breakdown for an already closed window is counted as late and left out of
the statistics (it is still on the breakdowns topic).

Like the join, this is plain data: the caller keeps the open windows in a Faust table
(one write per key per batch) and these functions say what to write and what is due.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from latscope.stream.sketch import Sketch

E2E = "end_to_end"   # pseudo segment: the sample's end-to-end delay
TAGS = ("src_host", "dst_host", "flow", "segment", "layer", "device")


@dataclass(frozen=True)
class WindowPolicy:
    interval_s: float = 1.0
    lateness_s: float = 1.0

    def start_of(self, wall_ns: int) -> int:
        step = int(self.interval_s * 1e9)
        return wall_ns - wall_ns % step

    def is_due(self, start_ns: int, now_s: float) -> bool:
        return now_s * 1e9 >= start_ns + (self.interval_s + self.lateness_s) * 1e9


def segment_name(seg: Mapping) -> str:
    return f"{seg['from']}→{seg['to']}"


def rows(bd: Mapping, flow: str) -> Iterator[tuple[dict, int, int]]:
    """(tags, duration ns, position on the path) of every segment, plus the end-to-end
    delay of complete samples (position -1)."""
    base = {"src_host": bd["src_host"], "dst_host": bd["dst_host"], "flow": flow}
    for i, seg in enumerate(bd["segments"]):
        yield ({**base, "segment": segment_name(seg), "layer": seg["layer"],
                "device": seg.get("device") or ""}, seg["duration_ns"], i)
    if bd.get("end_to_end_ns") is not None:
        yield {**base, "segment": E2E, "layer": E2E, "device": ""}, bd["end_to_end_ns"], -1


def stat_key(start_ns: int, tags: Mapping[str, str]) -> str:
    return "|".join([str(start_ns), *(tags[t] for t in TAGS)])


@dataclass
class WindowCounters:
    samples: int = 0
    late: int = 0
    closed: int = 0

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Windows:
    """Folds breakdowns into per-window sketches; remembers the newest closed horizon."""

    def __init__(self, policy: WindowPolicy) -> None:
        self.policy = policy
        self.counters = WindowCounters()
        self.closed_until_ns = 0   # every window starting before this has been emitted

    def fold(self, items: Iterable[tuple[int, Mapping, str, int]],
             table: Mapping[str, dict]) -> dict[str, dict]:
        """Fold (partition, breakdown, flow name, wall ns) into the open windows.

        Returns the table writes: key → {"p", "w", "tags", "pos", "s": sketch dict}; ``pos``
        is the segment's earliest position on the path (plots stack segments in that order).
        """
        partial: dict[str, tuple[int, int, dict, Sketch]] = {}
        pos: dict[str, int] = {}
        for partition, bd, flow, wall_ns in items:
            start = self.policy.start_of(wall_ns)
            if start < self.closed_until_ns:
                self.counters.late += 1
                continue
            self.counters.samples += 1
            for tags, value, i in rows(bd, flow):
                key = stat_key(start, tags)
                entry = partial.get(key)
                if entry is None:
                    entry = partial[key] = (partition, start, tags, Sketch())
                    pos[key] = i
                elif i < pos[key]:
                    pos[key] = i
                entry[3].add(value)
        writes = {}
        for key, (partition, start, tags, sketch) in partial.items():
            old = table.get(key)
            if old is not None:
                sketch.merge(Sketch.from_dict(old["s"]))
                pos[key] = min(pos[key], old.get("pos", pos[key]))
            writes[key] = {"p": partition, "w": start, "tags": tags, "pos": pos[key],
                           "s": sketch.to_dict()}
        return writes

    def due(self, table: Mapping[str, dict], now_s: float) -> list[tuple[str, dict]]:
        """Windows to emit and delete now; advances the late horizon."""
        out = [(k, v) for k, v in list(table.items()) if self.policy.is_due(v["w"], now_s)]
        horizon = self.policy.start_of(int(now_s * 1e9 - self.policy.lateness_s * 1e9))
        self.closed_until_ns = max(self.closed_until_ns, horizon)
        self.counters.closed += len(out)
        return out
