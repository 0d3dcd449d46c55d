"""What the stream worker does to records, with no Faust in it: tests drive it with plain
dicts, the worker (stream/app.py) with its tables' dicts and Kafka records.

    layer-events batch ─► decode ─► Joiner (pending) ─► breakdown ─► publish (Avro)
                                                                  ├► Windows (stats) ─► sink
                                                                  └► raw samples ─► sink
    undecodable ─► dead letters (counted)        timer ─► expired samples, closed windows

Outputs go to a Publisher (Kafka topics) and an optional StatsSink; table writes go through
TableChanges, which keeps them for the changelog. When they are acknowledged is the
outputs' business (stream/outputs.py), not the pipeline's.
"""

from __future__ import annotations

import heapq
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from latscope import log
from latscope.bpf.clock import monotonic_ns
from latscope.schemas import codec
from latscope.stats.sketch import Sketch
from latscope.stream import door
from latscope.stream.bounded import FlowTags, LruMap
from latscope.stream.breakdown_avro import encode_breakdown
from latscope.stream.changes import TableChanges
from latscope.stream.closed_windows import ClosedWindows
from latscope.stream.flows import FlowResolver
from latscope.stream.join import Joiner
from latscope.stream.layer_avro import decode_layer_events
from latscope.stream.segments import ClockView, breakdown
from latscope.stream.settings import StreamSettings
from latscope.stream.sink import Sample, StatsSink, Window
from latscope.stream.windows import TAGS, Windows

_log = log.get("stream")

PENDING, STATS = "pending", "stats"   # the tables' names (Faust's too)
# Statistics of resent bytes' samples go to a flow of their own, this suffix on the name: a
# resend's delay (loss recovery) is not the flow's latency.
RESENT = "+resent"


class Publisher(Protocol):
    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: dict[str, bytes] | None = None) -> None: ...


def keep_tighter(old: Mapping, new: Mapping, hold_s: float, factor: float = 4.0) -> bool:
    """Keep using ``old`` when ``new`` claims a bound ``factor`` times looser and ``old`` is
    younger than ``hold_s``: a sync path that is congested for a while (its probes queue
    behind bulk traffic) yields fits with ms bounds, while the last good fit extrapolated
    by its drift stays within µs for tens of seconds."""
    return (new["error_bound_ns"] > factor * max(old["error_bound_ns"], 1.0)
            and new["ref_ns"] - old["ref_ns"] < hold_s * 1e9)


def window_json(win: dict) -> dict:
    """An open window as the changelog keeps it: its live Sketch in dict form."""
    return {**win, "s": Sketch.of(win["s"]).to_dict()}


@dataclass
class Counters:
    messages: int = 0         # Kafka messages read from the layer-events topic
    records: int = 0          # LayerEvents in them (an agent batches a flow's records)
    dead_lettered: int = 0    # records refused at the door, samples whose breakdown failed
    clock_models: int = 0
    clock_models_held: int = 0   # a much looser new model ignored for a recent tight one
    published: int = 0        # breakdowns written to the breakdowns topic
    complete: int = 0
    incomplete: int = 0
    dropped_revoked: int = 0  # pending entries of partitions this worker no longer owns
    resent: int = 0           # breakdowns of resent bytes (flagged; statistics kept apart)
    resent_dropped: int = 0   # of which dropped, not published (filter_retrans)
    paths_learned: int = 0    # flow paths learned (or grown) from closed samples

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Pipeline:
    """``tables``: the pending samples' and open windows' dicts (PENDING, STATS);
    ``clock_models``: host -> ClockModel, kept by ``on_clock``."""

    def __init__(self, settings: StreamSettings, tables: Mapping[str, dict], out: Publisher,
                 sink: StatsSink | None = None) -> None:
        self.settings = s = settings
        self.resolver = s.flows or FlowResolver()
        self.manager = s.manager or self.resolver.manager
        self.joiner = Joiner(s.join, self.resolver.path, self.resolver.late)
        self.windows = Windows(s.windows)
        self.counters = Counters()
        self.dead_reasons: Counter[str] = Counter()   # dead letters per reason
        self.changes = TableChanges(tables, {STATS: window_json})
        self.out = out
        self.sink = sink
        self.clock_models: dict[str, dict] = {}
        # closed windows merged, and the newest closed window, per stat series
        self.totals: LruMap[tuple, Sketch] = LruMap(s.max_series)
        self.totals_since = time.time()   # wall s: the closed windows merged from then on
        self.last_closed: LruMap[str, dict] = LruMap(s.max_series)
        self.closed = ClosedWindows()     # by start, for totals from any time (web views)
        self.flow_tags = FlowTags(s.flow_tags_per_pair, s.flow_tag_idle_s)
        self._wall_offset_ns = time.time_ns() - monotonic_ns()
        self.windows_evicted = 0   # open windows closed early: more than the bound

    @property
    def pending(self) -> dict:
        return self.changes.tables[PENDING]

    @property
    def stats(self) -> dict:
        return self.changes.tables[STATS]

    # -- input ----------------------------------------------------------------------------
    def on_clock(self, key: bytes | None, value: bytes | None, *, dead_letter: bool = True,
                 apply: bool = True) -> None:
        """One clock-topic record: a ClockModel, or a compaction tombstone (the host left).
        In a worker the group's owner of the clock partition dead-letters bad ones
        (``apply=False``) and every worker's follower keeps good ones (``dead_letter=False``,
        latscope/topic_follow.py)."""
        def reject(reason: str, text: str) -> None:
            if dead_letter:
                self._dead_letter(key, value, reason, text, self.settings.clock_topic)

        if value is None:
            if key and apply:
                self.clock_models.pop(key.decode(), None)
            return
        try:
            _, model = codec.decode(value, expect="ClockModel")
        except codec.DecodeError as e:
            reject(door.decode_reason(e), str(e))
            return
        bad = door.clock_problem(model)
        if bad:
            reject(*bad)
            return
        old = self.clock_models.get(model["host"])
        if old is None and len(self.clock_models) >= self.settings.max_clock_hosts:
            reject("too_many_hosts", f"{len(self.clock_models)} hosts have clock models already")
            return
        if not apply:
            return
        self.counters.clock_models += 1
        if old is not None and keep_tighter(old, model, self.settings.clock_hold_s):
            self.counters.clock_models_held += 1
            return
        self.clock_models[model["host"]] = model

    def clocks(self) -> ClockView:
        """The clock models as they are now: a plain copy (a few hosts), read per sample."""
        return ClockView(dict(self.clock_models), self.manager, self.resolver.clock_hosts)

    def on_batch(self, items: Sequence[tuple[int, bytes | None, bytes, float]]) -> None:
        """(partition, key, value, Kafka timestamp in s) of layer-events messages."""
        decoded: list[tuple[int, float, dict]] = []
        chunk = self.settings.chunk_records
        for partition, key, value, ts in items:
            self.counters.messages += 1
            try:
                events = decode_layer_events(value)
            except codec.DecodeError as e:
                self._dead_letter(key, value, door.decode_reason(e), str(e),
                                  self.settings.layer_topic)
                continue
            self.counters.records += len(events)
            for ev in events:
                bad = door.event_problem(ev)
                if bad is None:
                    decoded.append((partition, ts, ev))
                else:
                    self._dead_letter(key, _encoded(ev, value), *bad, self.settings.layer_topic)
            # Join and emit in chunks: records decoded long before they are used fall out
            # of the CPU caches (~10 µs a sample in 2000-message batches of agent batches).
            if len(decoded) >= chunk:
                self._join(decoded)
                decoded = []
        if decoded:
            self._join(decoded)
        self._fold()

    def on_tick(self, now: float, backlogged: set[int] | frozenset[int] = frozenset()) -> None:
        """Close what is due: samples whose join window passed (``backlogged``: partitions
        with records not read yet, whose samples wait), then the windows the event-time
        watermark has passed."""
        self.joiner.backlogged = set(backlogged)
        done = self.joiner.expire(self.pending, now)
        self.changes.apply(PENDING, {st["k"]: (st["p"], None) for st in done})
        self._emit(done)
        self._fold()
        self._close_windows(self.windows.due(self.stats, self.joiner.event_watermark(now)))

    def _close_windows(self, due: Sequence[tuple[str, dict]]) -> None:
        closed: list[Window] = []
        gone: dict[str, tuple[int, None]] = {}
        for key, win in due:
            sketch = Sketch.of(win["s"])
            self.closed.add(self._add_total(win["tags"], sketch), win["w"], sketch)
            closed.append((win["tags"], sketch, win["w"], win.get("pos", 0)))
            self.last_closed["|".join(key.split("|")[1:])] = win
            gone[key] = (win["p"], None)
        # Written before the tombstones are sealed: the barrier sends those only once the
        # sink has these points.
        if closed and self.sink is not None:
            self.sink.write_windows(closed)
        self.changes.apply(STATS, gone)

    def drop_partitions(self, owned: set[int]) -> None:
        """Forget pending samples and windows of partitions another worker now owns."""
        if not owned:
            return
        self.joiner.keep_partitions(owned)
        for name in (PENDING, STATS):
            stale = [k for k, v in self.changes.tables[name].items() if v["p"] not in owned]
            self.changes.forget(name, stale)
            self.counters.dropped_revoked += len(stale)

    # -- what it holds --------------------------------------------------------------------
    def all_counters(self) -> dict[str, int]:
        out = self.counters.as_dict()
        out.update({f"join_{k}": v for k, v in self.joiner.counters.as_dict().items()})
        out.update({f"window_{k}": v for k, v in self.windows.counters.as_dict().items()})
        out.update({f"dead_lettered_{k}": v for k, v in self.dead_reasons.items()})
        out["pending"] = len(self.pending)
        out["open_windows"] = len(self.stats)
        out["windows_evicted"] = self.windows_evicted
        out["series_evicted"] = self.totals.evicted + self.last_closed.evicted
        out["flow_tags_other"] = self.flow_tags.aggregated
        out["flow_tags_evicted"] = self.flow_tags.evicted + self.flow_tags.pairs_evicted
        return out

    # -- helpers --------------------------------------------------------------------------
    def _join(self, decoded: list[tuple[int, float, dict]]) -> None:
        now = time.time()
        done, writes = self.joiner.process(decoded, self.pending, now)
        self.changes.apply(PENDING, writes)
        self._emit(done)
        bound = self.settings.max_pending
        if len(self.pending) > bound:   # evicted down to 90 %: not again every batch
            done = self.joiner.evict_oldest(self.pending, bound * 9 // 10, now)
            self.changes.apply(PENDING, {st["k"]: (st["p"], None) for st in done})
            self._emit(done)

    def _close_learned(self) -> None:
        """A path was learned: the samples that waited for it with every host in close."""
        done = self.joiner.close_ready(self.pending, time.time())
        self.changes.apply(PENDING, {st["k"]: (st["p"], None) for st in done})
        self._emit(done)

    def _emit(self, done: list[dict]) -> None:
        if not done:
            return
        clocks = self.clocks()
        publish, topic = self.out.publish, self.settings.breakdown_topic
        folded: list[Sample] = []
        c = self.counters
        tag, now = self.flow_tags.tag, time.monotonic()
        resolver, drop_resent = self.resolver, self.settings.filter_retrans
        learned = False
        for state in done:
            events = state["ev"]
            try:
                info = resolver.resolve(events[0]["flow"], events[0]["flow_id"])
                if learned and "bw" in state:
                    self.joiner.on_path(state)
                bd = breakdown(events, clocks, path=info.hosts())
            except Exception as e:   # this sample's own fault (its records, a clock): only it goes
                self._dead_letter(events[0]["flow_id"].encode(), _encoded_batch(events),
                                  "breakdown_failed", repr(e)[:300], self.settings.layer_topic)
                continue
            name = info.name if info.declared else tag(bd["src_host"], bd["dst_host"],
                                                        info.name, now)
            if info.route is not None and resolver.learn(info, bd):
                c.paths_learned += 1
                learned = True
            if bd["retrans"]:
                c.resent += 1
                if drop_resent:
                    c.resent_dropped += 1
                    continue
                name += RESENT
            c.published += 1
            if bd["complete"]:
                c.complete += 1
            else:
                c.incomplete += 1
            publish(topic, bd["flow_id"].encode(), encode_breakdown(bd))
            folded.append((state["p"], bd, name, bd["ts_ns"] + self._wall_offset_ns))
        self.windows.collect(folded)   # flushed into the window table per batch: _fold
        if self.sink is not None and self.settings.raw_samples:
            self.sink.write_samples(folded)
        if learned:
            self._close_learned()

    def _fold(self) -> None:
        """The samples emitted since the last call into the open windows' sketches; past
        the bound, the earliest windows close now (down to 90 %)."""
        self.changes.apply(STATS, self.windows.flush(self.stats))
        bound = self.settings.max_open_windows
        if len(self.stats) > bound:
            due = heapq.nsmallest(len(self.stats) - bound * 9 // 10, self.stats.items(),
                                  key=lambda kv: kv[1]["w"])
            self.windows_evicted += len(due)
            self._close_windows(due)

    def reset_totals(self) -> int:
        """Forget the merged statistics (a new run starts counting); the series dropped."""
        n = len(self.totals)
        self.totals.clear()
        self.totals_since = time.time()
        return n

    def _add_total(self, tags: Mapping[str, str], sketch: Sketch) -> tuple[str, ...]:
        """Whole-run statistics: the closed windows merged (cheaper than per sample); the
        series' key."""
        tkey = tuple(tags[t] for t in TAGS)
        total = self.totals.get(tkey)
        if total is None:   # its own object: the closed window's sketch stays as it was
            total = self.totals[tkey] = Sketch(accuracy=sketch.accuracy)
        total.merge(sketch)
        return tkey

    def _dead_letter(self, key: bytes | None, value: bytes | None, reason: str, detail: str,
                     source: str) -> None:
        """To the dead-letter topic, headers ``reason`` (counted as dead_lettered_<reason>),
        ``error`` (what was wrong) and ``source`` (the topic it came from)."""
        self.counters.dead_lettered += 1
        self.dead_reasons[reason] += 1
        _log.debug("dead-lettered a record from %s (%s): %s", source, reason, detail)
        self.out.publish(self.settings.dead_letter_topic, key, value,
                         {"reason": reason.encode(), "error": detail.encode(errors="replace"),
                          "source": source.encode()})


def _encoded(ev: dict, message: bytes) -> bytes:
    """A refused record alone, as a LayerEvent; the message it came in when it cannot be."""
    try:
        return codec.encode("LayerEvent", ev)
    except Exception:   # a value the schema cannot hold: the original bytes say it all
        return message


def _encoded_batch(events: Sequence[dict]) -> bytes | None:
    try:
        return codec.encode("LayerEventBatch", {"events": list(events)})
    except Exception:
        return None
