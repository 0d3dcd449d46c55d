"""Tumbling-window statistics per (source host, destination host, flow, segment).

A breakdown belongs to the window of its own time (the first point on the reference clock,
mapped to wall time), so replaying input after a crash rebuilds the same windows and the
idempotent InfluxDB writes overwrite rather than duplicate. A window closes once the
event-time watermark (stream/join.py ``event_watermark``: no sample still to close began
before it) passes its end by ``lateness_s`` (the slack for the reference clock's mapping to
wall time); a breakdown for an already closed window is counted as late and left out of the
statistics (it is still on the breakdowns topic).

Like the join, this is plain data: the caller keeps the open windows in a Faust table
(one write per key per batch) and these functions say what to write and what is due.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from operator import itemgetter

from latscope.stats.sketch import Sketch

E2E = "end_to_end"   # pseudo segment: the sample's end-to-end delay
TAGS = ("src_host", "dst_host", "flow", "segment", "layer", "device")
_SERIES_MAX = 10_000   # cached (flow, hosts) of the series cache; cleared past this
_SEG_KEY = itemgetter("from", "to", "layer", "device")
_SEG_DURATION = itemgetter("duration_ns")


@dataclass(frozen=True)
class WindowPolicy:
    interval_s: float = 1.0
    lateness_s: float = 0.5

    def start_of(self, wall_ns: int) -> int:
        step = int(self.interval_s * 1e9)
        return wall_ns - wall_ns % step

    def is_due(self, start_ns: int, watermark_s: float) -> bool:
        return watermark_s * 1e9 >= start_ns + (self.interval_s + self.lateness_s) * 1e9


def segment_name(seg: Mapping) -> str:
    return f"{seg['from']}→{seg['to']}"


def rows(bd: Mapping, flow: str) -> Iterator[tuple[dict, int, int]]:
    """(tags, duration ns, position on the path) of every segment, plus the end-to-end
    delay of complete samples (position -1)."""
    base = {"src_host": bd["src_host"], "dst_host": bd["dst_host"], "flow": flow}
    for i, seg in enumerate(bd["segments"]):
        yield _segment_tags(base, seg), seg["duration_ns"], i
    if bd.get("end_to_end_ns") is not None:
        yield _e2e_tags(base), bd["end_to_end_ns"], -1


def _segment_tags(base: Mapping[str, str], seg: Mapping) -> dict[str, str]:
    return {**base, "segment": segment_name(seg), "layer": seg["layer"],
            "device": seg.get("device") or ""}


def _e2e_tags(base: Mapping[str, str]) -> dict[str, str]:
    return {**base, "segment": E2E, "layer": E2E, "device": ""}


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
        # (flow, src host, dst host) → segment (from, to, layer, device) → series name, tags
        self._series: dict[tuple[str, str, str], dict] = {}
        # collected, not yet flushed: (window start, series) → [partition, tags, durations,
        # earliest position]; (window start, flow and hosts, segment keys) → each
        # segment's durations list
        self._partial: dict[tuple[int, str], list] = {}
        self._slots: dict[tuple, list[list]] = {}

    def fold(self, items: Iterable[tuple[int, Mapping, str, int]],
             table: Mapping[str, dict]) -> dict[str, dict]:
        """Fold (partition, breakdown, flow name, wall ns) into the open windows: collect()
        then flush()."""
        self.collect(items)
        return self.flush(table)

    def collect(self, items: Iterable[tuple[int, Mapping, str, int]]) -> None:
        """Take in (partition, breakdown, flow name, wall ns): their durations wait, per
        series, for flush().

        Hot path (design §9): a series' tags and key are built once per (flow, hosts,
        segment) and cached; a breakdown's durations go onto their series' lists at once.
        The stream worker collects per chunk of a batch (its breakdowns can then go) and
        flushes once per batch: each series flushed costs ~1.3 µs whatever its count, and
        a chunk holds only a few samples of each flow.
        """
        partial, slots = self._partial, self._slots
        step = int(self.policy.interval_s * 1e9)
        closed = self.closed_until_ns
        series_of = self._series
        for partition, bd, flow, wall_ns in items:
            start = wall_ns - wall_ns % step
            if start < closed:
                self.counters.late += 1
                continue
            self.counters.samples += 1
            base = (flow, bd["src_host"], bd["dst_host"])
            series = series_of.get(base)
            if series is None:
                if len(series_of) > _SERIES_MAX:
                    series_of.clear()
                series = series_of[base] = {}
            segs = bd["segments"]
            try:
                keys = tuple(map(_SEG_KEY, segs))
            except KeyError:   # device is optional
                keys = tuple((s["from"], s["to"], s["layer"], s.get("device")) for s in segs)
            slot = slots.get((start, base, keys))
            if slot is None:   # first sample of this path and window since the last flush
                slot = slots[(start, base, keys)] = []
                for i, (sk, seg) in enumerate(zip(keys, segs, strict=True)):
                    name = series.get(sk)
                    if name is None:
                        name = series[sk] = self._name(base, _segment_tags(self._base(base),
                                                                           seg))
                    entry = partial.get((start, name[0]))
                    if entry is None:
                        entry = partial[(start, name[0])] = [partition, name[1], [], i]
                    elif i < entry[3]:
                        entry[3] = i
                    slot.append(entry[2])
            # every segment's duration onto its series' list, in sample order (C loop:
            # list.append returns None, so any() runs it to the end)
            any(map(list.append, slot, map(_SEG_DURATION, segs)))
            e2e = bd.get("end_to_end_ns")
            if e2e is not None:
                name = series.get(E2E)
                if name is None:
                    name = series[E2E] = self._name(base, _e2e_tags(self._base(base)))
                key = (start, name[0])
                entry = partial.get(key)
                if entry is None:
                    partial[key] = [partition, name[1], [e2e], -1]
                else:
                    entry[2].append(e2e)
                    entry[3] = -1

    def flush(self, table: Mapping[str, dict]) -> dict[str, dict]:
        """Add what collect() took in to the open windows' sketches.

        Returns the table writes: key → {"p", "w", "tags", "pos", "s": Sketch}; ``pos``
        is the segment's earliest position on the path (plots stack segments in that order).
        The table holds live Sketch objects (a recovered entry may hold the dict form,
        ``Sketch.of`` takes either); the dict form is made only for the changelog.
        """
        writes = {}
        for (start, name), (partition, tags, values, pos) in self._partial.items():
            key = f"{start}|{name}"
            old = table.get(key)
            if old is None:
                sketch = Sketch()
            else:
                sketch = Sketch.of(old["s"])
                pos = min(pos, old.get("pos", pos))
            sketch.add_all(values)
            writes[key] = {"p": partition, "w": start, "tags": dict(tags), "pos": pos,
                           "s": sketch}
        self._partial.clear()
        self._slots.clear()
        return writes

    @staticmethod
    def _base(base: tuple[str, str, str]) -> dict[str, str]:
        return {"src_host": base[1], "dst_host": base[2], "flow": base[0]}

    @staticmethod
    def _name(base: tuple[str, str, str], tags: dict[str, str]) -> tuple[str, dict[str, str]]:
        """A series' key without its window start (see stat_key), and its tags."""
        return stat_key(0, tags).split("|", 1)[1], tags

    def due(self, table: Mapping[str, dict], watermark_s: float) -> list[tuple[str, dict]]:
        """Windows to emit and delete at this event-time watermark (wall s); advances the
        late horizon. -inf (a partition not read yet, with records waiting): none."""
        if not math.isfinite(watermark_s):
            return []
        out = [(k, v) for k, v in list(table.items())
               if self.policy.is_due(v["w"], watermark_s)]
        horizon = self.policy.start_of(int(watermark_s * 1e9 - self.policy.lateness_s * 1e9))
        self.closed_until_ns = max(self.closed_until_ns, horizon)
        self.counters.closed += len(out)
        return out
