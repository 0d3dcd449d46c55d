"""The Faust app: topics, tables and agents declared once; the agents only move records.

    latscope.layer-events ──take(n, within)──► decode ─► Joiner (pending table) ─► breakdown
    latscope.clock ─► clock_models (GlobalTable)               │
                                                               ├► latscope.breakdowns (Avro)
                                                               ├► Windows (stats table) ─► InfluxDB
                                                               └► latscope_sample ─► InfluxDB
    undecodable input ─► dead-letter topic (counted)

Outputs (breakdowns, dead letters) go through a librdkafka producer, flushed when Faust
starts a commit, before it picks the offsets to commit (at-least-once: an offset is
committed only once the outputs of the records before it are acknowledged). Faust's own
producer awaits one message at a time and capped the worker at well under 1k samples/s;
flushing after every batch instead left the worker idle ~1/6 of the time, waiting for acks.

Table writes name their partition explicitly: a ``take`` batch mixes partitions and a timer
has no current event, while Faust's own ``table[key] = v`` uses the current event's
partition. Every pending sample and open window carries its partition, so a rebalance
recovers each entry on the worker that owns its flow's partition.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import faust
from confluent_kafka import KafkaException
from faust.types import TP

from latscope import kafka, log
from latscope.bpf.clock import monotonic_ns
from latscope.paths import cache_dir
from latscope.schemas import codec
from latscope.schemas.records import (
    LAYER_EVENTS_CONFIG,
    LAYER_EVENTS_PARTITIONS,
    TOPIC_BREAKDOWNS,
    TOPIC_CLOCK,
    TOPIC_DEAD_LETTER,
    TOPIC_LAYER_EVENTS,
)
from latscope.sinks.influx import counters_line, sample_line, window_line
from latscope.sinks.influx_writer import InfluxSink
from latscope.sinks.settings import InfluxSettings
from latscope.stats.sketch import Sketch
from latscope.stream.breakdown_avro import encode_breakdown
from latscope.stream.flows import FlowResolver
from latscope.stream.join import Joiner, JoinPolicy
from latscope.stream.layer_avro import decode_layer_events
from latscope.stream.segments import ClockView, breakdown
from latscope.stream.windows import TAGS, WindowPolicy, Windows

_log = log.get("stream")


@dataclass
class StreamSettings:
    kafka: kafka.KafkaSettings = field(default_factory=kafka.KafkaSettings)
    app_id: str = "latscope-stream"
    layer_topic: str = TOPIC_LAYER_EVENTS
    clock_topic: str = TOPIC_CLOCK
    breakdown_topic: str = TOPIC_BREAKDOWNS
    dead_letter_topic: str = TOPIC_DEAD_LETTER
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    data_dir: Path | None = None
    join: JoinPolicy = field(default_factory=JoinPolicy)
    windows: WindowPolicy = field(default_factory=WindowPolicy)
    batch_max: int = 2000
    chunk_records: int = 512
    batch_within_s: float = 0.1
    tick_s: float = 0.25
    topology: Path | None = None
    manager: str | None = None
    influx: InfluxSettings | None = None
    raw_samples: bool = True
    from_beginning: bool = True
    clock_hold_s: float = 30.0
    default_partitions: int = LAYER_EVENTS_PARTITIONS

    @property
    def state_dir(self) -> Path:
        return self.data_dir or cache_dir() / "stream" / self.app_id


def keep_tighter(old: Mapping, new: Mapping, hold_s: float, factor: float = 4.0) -> bool:
    """Keep using ``old`` when ``new`` claims a bound ``factor`` times looser and ``old`` is
    younger than ``hold_s``: a sync path that is congested for a while (its probes queue
    behind bulk traffic) yields fits with ms bounds, while the last good fit extrapolated
    by its drift stays within µs for tens of seconds."""
    return (new["error_bound_ns"] > factor * max(old["error_bound_ns"], 1.0)
            and new["ref_ns"] - old["ref_ns"] < hold_s * 1e9)


@dataclass
class Counters:
    messages: int = 0         # Kafka messages read from the layer-events topic
    records: int = 0          # LayerEvents in them (an agent batches a flow's records)
    dead_lettered: int = 0    # undecodable messages
    clock_models: int = 0
    clock_models_held: int = 0   # a much looser new model ignored for a recent tight one
    published: int = 0        # breakdowns written to the breakdowns topic
    publish_failed: int = 0   # delivery reports with an error (after librdkafka's retries)
    complete: int = 0
    incomplete: int = 0
    dropped_revoked: int = 0  # pending entries of partitions this worker no longer owns

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class Runtime:
    """Everything a worker holds; the Faust agents call its two plain methods."""

    def __init__(self, settings: StreamSettings) -> None:
        self.settings = s = settings
        self.started = time.time()
        self.resolver = FlowResolver.from_topology(s.topology) if s.topology else FlowResolver()
        self.manager = s.manager or self.resolver.manager
        self.joiner = Joiner(s.join, self.resolver.path)
        self.windows = Windows(s.windows)
        self.counters = Counters()
        self.totals: dict[tuple, Sketch] = {}   # closed windows merged, per stat series
        self.last_closed: dict[str, dict] = {}  # newest closed window per stat series
        self.sink = InfluxSink(s.influx) if s.influx else None
        self._tags = dict(s.influx.tags) if s.influx else {}
        self._wall_offset_ns = time.time_ns() - monotonic_ns()
        self._last_counters_write = 0.0
        parts = kafka.ensure_topics(s.kafka, {
            s.layer_topic: (s.default_partitions, LAYER_EVENTS_CONFIG),
            s.clock_topic: (1, {"cleanup.policy": "compact"}),
            s.breakdown_topic: (s.default_partitions, {}),
            s.dead_letter_topic: (1, {}),
        })
        s.state_dir.mkdir(parents=True, exist_ok=True)
        self.app = app = faust.App(
            s.app_id, **kafka.faust_options(s.kafka), store="memory://",
            datadir=str(s.state_dir), web_enabled=True, web_bind=s.web_host,
            web_host=s.web_host, web_port=s.web_port,
            topic_partitions=parts[s.layer_topic], topic_replication_factor=1,
            processing_guarantee="at_least_once",
            consumer_auto_offset_reset="earliest" if s.from_beginning else "latest",
            producer_linger_ms=20, producer_compression_type="lz4",
            stream_buffer_maxsize=max(4096, 2 * s.batch_max),
            broker_commit_every=10_000, broker_commit_interval=1.0,
            autodiscover=False, table_cleanup_interval=30.0)
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw"}
        self.layer_topic = app.topic(s.layer_topic, **raw)
        self.clock_topic = app.topic(s.clock_topic, **raw)
        # JSON both ways; value_type stays unset: Faust would call dict.from_data in recovery.
        json_table = {"key_type": str}
        # Every worker follows every model live, not only at recovery: faust-streaming
        # keeps consuming a global table's changelog after recovery only when its
        # recovery buffer is 1 (otherwise a worker that does not consume the clock topic
        # never sees a model published after it started).
        self.clock_models = app.GlobalTable("clock_models", partitions=parts[s.clock_topic],
                                            help="ClockModel per host", recovery_buffer_size=1,
                                            **json_table)
        self.pending = app.Table("pending", partitions=parts[s.layer_topic],
                                 help="unmatched records per sampled byte", **json_table)
        self.stats = app.Table("stats", partitions=parts[s.layer_topic],
                               help="open statistics windows", **json_table)
        self.out = kafka.producer(s.kafka, **{
            "linger.ms": 5, "enable.idempotence": True, "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000, "delivery.report.only.error": True,
            "on_delivery": self._delivered})
        self._unflushed = 0
        app.sensors.add(_BeforeCommit(self))
        self._read_to: dict[int, int] = {}   # layer-events partition -> last offset read
        # table name -> (table, key -> (partition, value or None, already in the changelog))
        self._dirty: dict[str, tuple[faust.Table, dict[str, tuple[int, dict | None, bool]]]] = {}
        self._declare_agents()
        from latscope.stream.web import register_views

        register_views(self)

    # -- Faust wiring (records in, records out; nothing else) --------------------------------
    def _declare_agents(self) -> None:
        s, app = self.settings, self.app

        @app.agent(self.layer_topic, name="join_layer_events")
        async def join_layer_events(stream: faust.StreamT) -> None:
            async for events in stream.take_events(s.batch_max, within=s.batch_within_s):
                self.on_batch([(e.message.partition, e.message.key, e.value,
                                e.message.timestamp) for e in events])
                for e in events:     # in offset order within each partition
                    self._read_to[e.message.partition] = e.message.offset
                await asyncio.sleep(0)

        @app.agent(self.clock_topic, name="clock_models")
        async def clock_models(stream: faust.StreamT) -> None:
            async for event in stream.events():
                self.on_clock(event.message.key, event.value)

        @app.timer(s.tick_s, name="close_due")
        async def close_due() -> None:
            self.on_tick(time.time())

        @app.on_before_shutdown.connect
        async def flush_sink(app: faust.App, **kwargs: object) -> None:
            self._send_changelogs()
            self.close()

    # -- plain methods ------------------------------------------------------------------------
    def on_clock(self, key: bytes | None, value: bytes | None) -> None:
        if value is None:   # compaction tombstone: the host left
            if key:
                self.clock_models.pop(key.decode(), None)
            return
        try:
            _, model = codec.decode(value, expect="ClockModel")
        except codec.DecodeError as e:
            self._dead_letter(key, value, e, self.settings.clock_topic)
            return
        self.counters.clock_models += 1
        old = self.clock_models.get(model["host"])
        if old is not None and keep_tighter(old, model, self.settings.clock_hold_s):
            self.counters.clock_models_held += 1
            return
        self.clock_models[model["host"]] = model

    def clocks(self) -> ClockView:
        """The clock models as they are now: a plain copy (a few hosts), read per sample
        without the table's per-access bookkeeping."""
        return ClockView(dict(self.clock_models.data.items()), self.manager,
                         self.resolver.clock_hosts)

    def on_batch(self, items: Sequence[tuple[int, bytes | None, bytes, float]]) -> None:
        """(partition, key, value, Kafka timestamp in s) of layer-events messages."""
        decoded: list[tuple[int, float, dict]] = []
        for partition, key, value, ts in items:
            self.counters.messages += 1
            try:
                events = decode_layer_events(value)
            except codec.DecodeError as e:
                self._dead_letter(key, value, e, self.settings.layer_topic)
                continue
            self.counters.records += len(events)
            decoded.extend((partition, ts, ev) for ev in events)
            # Join and emit in chunks: records decoded long before they are used fall out
            # of the CPU caches (~10 µs a sample in 2000-message batches of agent batches).
            if len(decoded) >= self.settings.chunk_records:
                self._join(decoded)
                decoded = []
        if decoded:
            self._join(decoded)
        self._fold()
        self.out.poll(0)   # delivery reports (errors are counted); acks are awaited at commit

    def _join(self, decoded: list[tuple[int, float, dict]]) -> None:
        done, writes = self.joiner.process(decoded, rows(self.pending), time.time())
        self._apply(self.pending, writes)
        self._emit(done)

    def on_tick(self, now: float) -> None:
        self._drop_revoked()
        self.joiner.backlogged = self._backlogged()
        done = self.joiner.expire(rows(self.pending), now)
        self._apply(self.pending, {st["k"]: (st["p"], None) for st in done})
        self._emit(done)
        self._fold()
        lines = []
        for key, win in self.windows.due(rows(self.stats), now):
            sketch = Sketch.of(win["s"])
            self._add_total(win["tags"], sketch)
            lines.append(window_line(win["tags"], sketch, win["w"], self._tags,
                                     win.get("pos", 0)))
            self.last_closed["|".join(key.split("|")[1:])] = win
            self._apply(self.stats, {key: (win["p"], None)})
        self.out.poll(0)
        if self.sink:
            if now - self._last_counters_write >= 5:
                self._last_counters_write = now
                lines.append(counters_line(self.settings.app_id, self.all_counters(),
                                           time.time_ns(), self._tags))
            self.sink.write(lines)

    def _add_total(self, tags: Mapping[str, str], sketch: Sketch) -> None:
        """Whole-run statistics: the closed windows merged (cheaper than per sample)."""
        tkey = tuple(tags[t] for t in TAGS)
        total = self.totals.get(tkey)
        if total is None:   # its own object: the closed window's sketch stays as it was
            total = self.totals[tkey] = Sketch(accuracy=sketch.accuracy)
        total.merge(sketch)

    def all_counters(self) -> dict[str, int]:
        out = self.counters.as_dict()
        out.update({f"join_{k}": v for k, v in self.joiner.counters.as_dict().items()})
        out.update({f"window_{k}": v for k, v in self.windows.counters.as_dict().items()})
        if self.sink:
            out.update({f"influx_{k}": v for k, v in self.sink.counters.as_dict().items()})
        out["pending"] = len(self.pending.data)
        out["open_windows"] = len(self.stats.data)
        return out

    def close(self) -> None:
        try:
            self.out.flush(10)
        except KafkaException as e:
            _log.error("final flush of outputs failed: %s", e)
        if self.sink:
            self.sink.close()
            self.sink = None

    # -- helpers ------------------------------------------------------------------------------
    def _emit(self, done: list[dict]) -> None:
        if not done:
            return
        clocks = self.clocks()
        folded = []
        lines = []
        walls = []      # the raw samples' times, for the sink's freshness
        for state in done:
            events = state["ev"]
            info = self.resolver.resolve(events[0]["flow"], events[0]["flow_id"])
            bd = breakdown(events, clocks, path=info.path)
            self.counters.published += 1
            if bd["complete"]:
                self.counters.complete += 1
            else:
                self.counters.incomplete += 1
            self._produce(self.settings.breakdown_topic, bd["flow_id"].encode(),
                          encode_breakdown(bd))
            wall = bd["ts_ns"] + self._wall_offset_ns
            folded.append((state["p"], bd, info.name, wall))
            if self.sink and self.settings.raw_samples:
                lines.append(sample_line(bd, info.name, wall, self._tags))
                walls.append(wall)
        self.windows.collect(folded)   # flushed into the window table per batch: _fold
        if self.sink:
            self.sink.write(lines, walls)

    def _fold(self) -> None:
        """The samples emitted since the last call into the open windows' sketches."""
        self._apply(self.stats, self.windows.flush(rows(self.stats)))

    def _apply(self, table: faust.Table, writes: Mapping[str, tuple[int, dict | None] | dict]) -> None:
        """Change the table in memory now; its changelog goes out once per key, with the
        key's last value, when Faust next commits (before_commit)."""
        dirty = self._dirty.setdefault(table.name, (table, {}))[1]
        data = rows(table)
        for key, w in writes.items():
            partition, value = (w["p"], w) if isinstance(w, dict) else w
            was = dirty.get(key)
            # in the changelog already: it was in the table at the last commit
            dirty[key] = (partition, value, key in data if was is None else was[2])
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value

    def _send_changelogs(self) -> None:
        for table, dirty in self._dirty.values():
            for key, (partition, value, logged) in dirty.items():
                if value is not None:
                    if table is self.stats:   # an open window holds a live Sketch: JSON form
                        value = {**value, "s": Sketch.of(value["s"]).to_dict()}
                    table.send_changelog(partition, key, value)
                elif logged:     # a key born and gone within the batch needs no tombstone
                    table.send_changelog(partition, key, None, value_serializer="raw")
        self._dirty.clear()

    def owned_partitions(self) -> list[int]:
        """Partitions of the layer-events topic this worker consumes now."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:   # consumer not started yet
            return []
        return sorted(tp.partition for tp in assignment if tp.topic == self.settings.layer_topic)

    def _backlogged(self) -> set[int]:
        """Layer-events partitions holding records this worker has not read yet."""
        out = set()
        for p, offset in self._read_to.items():
            try:
                high = self.app.consumer.highwater(TP(self.settings.layer_topic, p))
            except Exception:   # consumer (re)starting: no fetch state to judge by
                continue
            if high is not None and offset + 1 < high:
                out.add(p)
        return out

    def _drop_revoked(self) -> None:
        """Forget pending samples and windows of partitions another worker now owns."""
        owned = set(self.owned_partitions())
        if not owned:
            return
        for table in (self.pending, self.stats):
            stale = [k for k, v in table.data.items() if v["p"] not in owned]
            for k in stale:
                del table.data[k]
            self.counters.dropped_revoked += len(stale)

    def _dead_letter(self, key: bytes | None, value: bytes | None, err: Exception,
                     source: str) -> None:
        self.counters.dead_lettered += 1
        _log.debug("dead-lettered a record from %s: %s", source, err)
        self._produce(self.settings.dead_letter_topic, key, value,
                      {"error": str(err).encode(), "source": source.encode()})

    def _delivered(self, err: object, msg: object) -> None:
        if err is not None:
            self.counters.publish_failed += 1
            _log.error("publishing failed: %s", err)

    def _produce(self, topic: str, key: bytes | None, value: bytes | None,
                 headers: dict[str, bytes] | None = None) -> None:
        kafka.produce(self.out, topic, value, key=key, headers=headers)
        self._unflushed += 1

    def before_commit(self) -> None:
        """What Faust's commit must find sent: the tables' changes since the last commit
        (Faust's own producer, which it flushes before committing) and our outputs.

        Per commit, not per batch: the open windows of every flow and segment changed in
        every batch, ~1k changelog records a batch, and a sample pending at a batch's end
        is mostly closed by the next; both cost ~30 µs a record in Faust's producer."""
        self._send_changelogs()
        self.flush_out()

    def flush_out(self) -> None:
        """Block until every output so far is acknowledged: only then may Faust commit."""
        if not self._unflushed:
            return
        while (left := self.out.flush(5)) > 0:
            _log.warning("still waiting for Kafka to acknowledge %d records", left)
        self._unflushed = 0


def rows(table: faust.Table) -> dict:
    """A table's contents as the plain dict the memory store keeps them in (Faust's
    recovery writes that same dict). Read and written per record on the hot path: the
    store's Mapping methods are Python wrappers around it, ~0.3 µs a call."""
    return table.data.data


class _BeforeCommit(faust.Sensor):
    """Faust calls a sensor's on_commit_initiated right before it collects the offsets to
    commit, with nothing else running on the loop in between."""

    def __init__(self, runtime: Runtime) -> None:
        super().__init__()
        self.runtime = runtime

    def on_commit_initiated(self, consumer: object) -> None:
        self.runtime.before_commit()


def run_worker(settings: StreamSettings, loglevel: str = "warning") -> int:
    """Run one worker until SIGINT/SIGTERM; a second worker with the same app id splits the
    partitions."""
    from faust.worker import Worker

    rt = Runtime(settings)
    worker = Worker(rt.app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    # Every sample makes and drops a few dozen small dicts; with the default thresholds the
    # collector ran so often it took half the CPU (benchmarks/stream_cpu.py). Start-up
    # objects (modules, Faust) are frozen out of its scans, and young collections are rarer.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        worker.execute_from_commandline()
    finally:
        rt.close()
    return 0
