"""The Faust wiring: app, topics, tables, agents, timer and the commit sensor, declared
once. They only move records; what happens to them is the pipeline's (stream/pipeline.py),
when outputs count as done the outputs' (stream/outputs.py).

    latscope.layer-events ──noack_take(n, within)──► Pipeline.on_batch ─► Outputs.hold
    latscope.clock ──► Pipeline.on_clock (the partition's owner: dead letters)
    latscope.clock ──► TopicFollower ─► Pipeline.on_clock ─► clock models (every worker)
    timer ──► Pipeline.on_tick (expired samples, closed windows)
    commit ──► Outputs.barrier (sealed table changes ─► changelogs; messages acknowledged)

Input messages are acknowledged by hand, at the barrier, once their outputs are: Faust
commits the offsets of acknowledged messages only (layer-events: the offset after the last
settled record of each partition, whose records are taken in offset order, stream/sequence.py).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import faust
from confluent_kafka import Consumer, KafkaException, TopicPartition
from faust.types import TP

from latscope import kafka, log
from latscope.schemas.records import LAYER_EVENTS_CONFIG, TOPIC_FLOW_STATS, TOPICS
from latscope.stream.changes import Record
from latscope.stream.flow_stats import FlowContext
from latscope.stream.outputs import Outputs
from latscope.stream.pipeline import PENDING, STATS, Pipeline
from latscope.stream.sequence import InputOrder
from latscope.stream.settings import StreamSettings
from latscope.stream.sink import StatsSink
from latscope.topic_follow import TopicFollower

COUNTERS_EVERY_S = 5.0   # the worker's counters to the sink

_log = log.get("stream")


class _TableRows(Mapping[str, dict]):
    """Table name -> the plain dict the memory store keeps its rows in (Faust's recovery
    writes that same dict). Read and written per record on the hot path: the store's Mapping
    methods are Python wrappers around it, ~0.3 µs a call. Looked up on use: the store is
    made once the app runs."""

    def __init__(self, tables: Mapping[str, faust.Table]) -> None:
        self._tables = tables

    def __getitem__(self, name: str) -> dict:
        return self._tables[name].data.data

    def __iter__(self) -> Iterator[str]:
        return iter(self._tables)

    def __len__(self) -> int:
        return len(self._tables)


class Worker:
    """One stream worker: its Faust app and the pipeline and outputs the app feeds."""

    def __init__(self, settings: StreamSettings, sink: StatsSink | None = None) -> None:
        self.settings = s = settings
        self.started = time.time()
        self.sink = sink
        parts = kafka.ensure_topics(s.kafka, {
            s.layer_topic: (s.default_partitions, LAYER_EVENTS_CONFIG),
            s.clock_topic: (1, {"cleanup.policy": "compact"}),
            s.breakdown_topic: (s.default_partitions, {}),
            s.dead_letter_topic: (1, {}),
            s.flow_stats_topic: TOPICS[TOPIC_FLOW_STATS],
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
            broker_commit_every=10_000, broker_commit_interval=s.commit_interval_s,
            **({} if s.session_timeout_s is None else {
                "broker_session_timeout": s.session_timeout_s,
                "broker_heartbeat_interval": s.session_timeout_s / 4}),
            autodiscover=False, table_cleanup_interval=30.0)
        raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw",
               "value_serializer": "raw"}
        self.layer_topic = app.topic(s.layer_topic, **raw)
        self.clock_topic = app.topic(s.clock_topic, **raw)
        # JSON both ways; value_type stays unset: Faust would call dict.from_data in recovery.
        json_table = {"key_type": str}
        self.tables = {
            PENDING: app.Table(PENDING, partitions=parts[s.layer_topic],
                               help="unmatched records per sampled byte", **json_table),
            STATS: app.Table(STATS, partitions=parts[s.layer_topic],
                             help="open statistics windows", **json_table),
        }
        self.outputs = Outputs(s.kafka, sink, self._send_changelog, self._ack,
                               wait_s=s.barrier_wait_s, max_behind=s.barrier_max_behind)
        self.pipeline = Pipeline(s, _TableRows(self.tables), self.outputs, sink)
        self.clock_follower = TopicFollower(
            s.kafka, s.clock_topic, f"{s.app_id}-clock-follower",
            lambda k, v: self.pipeline.on_clock(k, v, dead_letter=False))
        self.clock_follower.catch_up()
        self.flow_stats_topic = app.topic(s.flow_stats_topic, **raw)
        self.flow_context = FlowContext(
            self.pipeline.resolver,
            lambda v, why: self.outputs.publish(s.dead_letter_topic, None, v, {
                "error": why.encode(), "source": s.flow_stats_topic.encode()}),
            sink.write_flow_stats if sink is not None else None)
        self._read_to: dict[int, int] = {}   # layer-events partition -> last offset read
        self.order = InputOrder()
        self._offsets: Consumer | None = None   # reads the group's committed offsets
        self._counters_written = 0.0
        # Failures outside any one record (bugs): counted, and the worker goes on.
        self.failures: Counter[str] = Counter()
        self._closed = False
        app.sensors.add(_CommitBarrier(self))
        self._declare_agents()
        from latscope.stream.web import register_views

        register_views(self)

    # -- records in, records out ----------------------------------------------------------
    def _declare_agents(self) -> None:
        s, app = self.settings, self.app

        @app.agent(self.layer_topic, name="join_layer_events")
        async def join_layer_events(stream: faust.StreamT) -> None:
            async for taken in stream.noack_take(s.batch_max, within=s.batch_within_s):
                events = await self._in_order(taken)
                if not events:
                    continue
                items = [(e.message.partition, e.message.key, e.value, e.message.timestamp)
                         for e in events]
                try:
                    self.pipeline.on_batch(items)
                except Exception:   # a bug, not a record: counted, logged; the worker goes on
                    self.failures["batch_failed"] += 1
                    _log.exception("a batch of %d messages failed", len(items))
                for e in events:     # in offset order within each partition
                    self._read_to[e.message.partition] = e.message.offset
                self.outputs.hold(stream, events)
                self.outputs.poll()
                await asyncio.sleep(0)

        @app.agent(self.clock_topic, name="clock_models")
        async def clock_models(stream: faust.StreamT) -> None:
            manual = stream.noack()
            async for event in manual.events():
                try:   # models are kept by every worker's follower; bad ones go here
                    self.pipeline.on_clock(event.message.key, event.value, apply=False)
                except Exception:
                    self.failures["clock_failed"] += 1
                    _log.exception("a clock record failed")
                self.outputs.hold(manual, [event])   # a dead letter may have come of it

        @app.agent(self.flow_stats_topic, name="flow_stats")
        async def flow_stats(stream: faust.StreamT) -> None:
            async for value in stream:
                try:
                    self.flow_context.on_message(value)
                except Exception:   # a bug, not a record (those are dead-lettered): counted
                    self.failures["flow_stats_failed"] += 1
                    _log.exception("a flow-stats record failed")

        @app.timer(s.tick_s, name="close_due")
        async def close_due() -> None:
            try:
                self.clock_follower.poll()
                await self._reseek(self.order.stalled(time.monotonic()))
                self.tick(time.time())
            except Exception:   # the next tick tries again; a dead timer would close nothing
                self.failures["tick_failed"] += 1
                _log.exception("closing due samples and windows failed")

        @app.on_before_shutdown.connect
        async def flush_outputs(app: faust.App, **kwargs: object) -> None:
            self.close()

    async def _in_order(self, events: Sequence[Any]) -> list[Any]:
        """The events to take (stream/sequence.py): each partition's next offsets, in order;
        partitions that lost records on the way are sought back to the first missing."""
        order = self.order
        new = order.unknown(events)
        if new:
            for p, offset in self._starts(new, events).items():
                order.start(p, offset)
        take, seek = order.split(events, time.monotonic())
        await self._reseek(seek)
        return take

    async def _reseek(self, seek: Mapping[int, int]) -> None:
        for p, offset in seek.items():
            _log.warning("layer-events partition %d: records from offset %d missing from the "
                         "stream, read again", p, offset)
            try:
                await self.app.consumer.seek(TP(self.settings.layer_topic, p), offset)
            except Exception as e:   # revoked meanwhile: the next assignment starts it again
                _log.warning("seeking layer-events partition %d failed: %r", p, e)

    def _starts(self, partitions: set[int], events: Sequence[Any]) -> dict[int, int]:
        """Where each newly assigned partition starts: the group's committed offset, else the
        log's start (from the beginning) or the first record delivered (latest)."""
        topic = self.settings.layer_topic
        if self._offsets is None:
            self._offsets = kafka.consumer(self.settings.kafka, self.settings.app_id)
        first = {p: min(e.message.offset for e in events if e.message.partition == p)
                 for p in partitions}
        try:
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            out = {tp.partition: tp.offset
                   for tp in self._offsets.committed(tps, timeout=10) if tp.offset >= 0}
            if self.settings.from_beginning:
                for p in partitions - out.keys():
                    out[p] = self._offsets.get_watermark_offsets(TopicPartition(topic, p),
                                                                 timeout=10)[0]
        except KafkaException as e:   # the broker delivers but does not answer: as delivered
            self.failures["input_start_unknown"] += len(partitions)
            _log.error("committed offsets of layer-events partitions %s not read (%s): "
                       "starting at the first record delivered", sorted(partitions), e)
            return first
        return first | out

    def _committable(self, consumer: Any) -> None:
        """Faust commits, per layer-events partition, the offset after the last record whose
        outputs settled (InputOrder.settled), never from its own ack and gap bookkeeping
        (stream/sequence.py says why). Installed on the consumer Faust commits with."""
        if getattr(consumer, "_latscope_offsets", False):
            return
        faust_new_offset, topic, settled = consumer._new_offset, self.settings.layer_topic, \
            self.order.settled

        def new_offset(tp: TP) -> int | None:
            if tp.topic != topic:
                return faust_new_offset(tp)
            consumer._acked[tp].clear()
            consumer._acked_index[tp].clear()
            consumer._gap.pop(tp, None)
            return settled.get(tp.partition)

        consumer._new_offset = new_offset
        consumer._latscope_offsets = True

    def tick(self, now: float) -> None:
        if self._closed:   # the timer may fire once more while the app stops
            return
        self.pipeline.drop_partitions(set(self.owned_partitions()))
        self.pipeline.on_tick(now, self._backlogged())
        self.outputs.poll()
        if self.sink is not None and now - self._counters_written >= COUNTERS_EVERY_S:
            self._counters_written = now
            self.sink.write_counters(self.settings.app_id, self.all_counters(), time.time_ns())

    def commit_barrier(self, drain: bool | None = None) -> None:
        """Faust is about to pick the offsets to commit. Draining (a rebalance, shutdown):
        wait, within the deadline, for every output, so no input is read twice."""
        if self._closed:   # after the consumer's last commit: close() did what was left
            return
        if drain is None:
            drain = self.app.rebalancing or self.app.should_stop
        self.outputs.barrier(self.pipeline.changes.seal(), drain)

    def _send_changelog(self, rec: Record) -> None:
        name, partition, key, value = rec
        self.tables[name].send_changelog(partition, key, value, value_serializer="raw")

    def _ack(self, stream: Any, events: Sequence[Any]) -> None:
        """What Stream.ack does, without a coroutine per event."""
        on_event_out = self.app.sensors.on_stream_event_out
        on_message_out = self.app.sensors.on_message_out
        topic, settle = self.settings.layer_topic, self.order.settle
        for event in events:
            message = event.message
            if message.topic == topic:
                settle(message.partition, message.offset)
            last = event.ack()
            on_event_out(message.tp, message.offset, stream, event)
            if last:
                on_message_out(message.tp, message.offset, message)

    # -- state ------------------------------------------------------------------------------
    def all_counters(self) -> dict[str, int]:
        out = self.pipeline.all_counters()
        out.update(self.outputs.counters.as_dict())
        out.update(self.outputs.gauges())
        out.update(self.order.counters.as_dict())
        out.update(self.failures)
        out.update(vars(self.flow_context.counters))
        if self.sink is not None:
            out.update({f"influx_{k}": v for k, v in self.sink.counters.as_dict().items()})
        return out

    def owned_partitions(self) -> list[int]:
        """Partitions of the layer-events topic this worker consumes now."""
        try:
            assignment = self.app.consumer.assignment()
        except Exception:   # consumer not started yet
            return []
        return sorted(tp.partition for tp in assignment if tp.topic == self.settings.layer_topic)

    def _backlogged(self) -> set[int]:
        """Layer-events partitions holding records this worker has not read yet: read
        behind their end, or owned and not read at all while their end is unknown or past
        where the consumer starts (a worker recovering: their samples and windows wait)."""
        out = set()
        topic = self.settings.layer_topic
        try:
            consumer = self.app.consumer
            # where Faust sought each partition on assignment: the group's committed offset
            # (the next to read), None without one
            sought = getattr(consumer, "_read_offset", {})
        except Exception:   # consumer not started yet
            return out
        for p in {*self._read_to, *self.owned_partitions()}:
            tp = TP(topic, p)
            try:
                high = consumer.highwater(tp)
            except Exception:   # consumer (re)starting: no fetch state to judge by
                continue
            offset = self._read_to.get(p)
            if offset is not None:
                if high is not None and offset + 1 < high:
                    out.add(p)
            elif high is None:
                out.add(p)
            else:
                start = sought.get(tp)
                if start is None:
                    start = 0 if self.settings.from_beginning else high
                if start < high:
                    out.add(p)
        return out

    def close(self) -> None:
        """After the consumer's last commit (Faust's on_before_shutdown): the outputs
        flushed, and the last changes sent as far as no input of them is left uncommitted."""
        if not self._closed:
            self._closed = True
            self.outputs.close(self.pipeline.changes.seal())
            if self._offsets is not None:
                self._offsets.close()
            self.clock_follower.close()


class _CommitBarrier(faust.Sensor):
    """Faust calls a sensor's on_commit_initiated right before it collects the offsets to
    commit, with nothing else running on the loop in between."""

    def __init__(self, worker: Worker) -> None:
        super().__init__()
        self.worker = worker

    def on_commit_initiated(self, consumer: object) -> None:
        self.worker.commit_barrier()
        self.worker._committable(consumer)

    def on_rebalance_start(self, app: object) -> dict:
        """Partitions are (re)assigned: each starts again at the group's committed offset."""
        self.worker.order.reset()
        return {}


def run_worker(settings: StreamSettings, sink: StatsSink | None = None,
               loglevel: str = "warning") -> int:
    """Run one worker until SIGINT/SIGTERM; a second worker with the same app id splits the
    partitions. ``sink``: where statistics go (the caller makes it: stream/cli.py)."""
    from faust.worker import Worker as FaustWorker

    w = Worker(settings, sink)
    worker = FaustWorker(w.app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    # Every sample makes and drops a few dozen small dicts; with the default thresholds the
    # collector ran so often it took half the CPU (benchmarks/stream_cpu.py). Start-up
    # objects (modules, Faust) are frozen out of its scans, and young collections are rarer.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
    try:
        worker.execute_from_commandline()
    finally:
        w.close()
    return 0
