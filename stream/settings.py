"""The stream worker's settings (plain data: the pipeline, outputs and Faust wiring read
them; stream/cli.py fills them from the command line and config)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from latscope import kafka
from latscope.paths import cache_dir
from latscope.schemas.records import (
    LAYER_EVENTS_PARTITIONS,
    TOPIC_BREAKDOWNS,
    TOPIC_CLOCK,
    TOPIC_DEAD_LETTER,
    TOPIC_FLOW_STATS,
    TOPIC_LAYER_EVENTS,
)
from latscope.stream.flows import FlowResolver
from latscope.stream.join import JoinPolicy
from latscope.stream.windows import WindowPolicy


@dataclass
class StreamSettings:
    kafka: kafka.KafkaSettings = field(default_factory=kafka.KafkaSettings)
    app_id: str = "latscope-stream"
    layer_topic: str = TOPIC_LAYER_EVENTS
    clock_topic: str = TOPIC_CLOCK
    breakdown_topic: str = TOPIC_BREAKDOWNS
    dead_letter_topic: str = TOPIC_DEAD_LETTER
    flow_stats_topic: str = TOPIC_FLOW_STATS
    web_host: str = "127.0.0.1"
    web_port: int = 6066
    data_dir: Path | None = None
    join: JoinPolicy = field(default_factory=JoinPolicy)
    windows: WindowPolicy = field(default_factory=WindowPolicy)
    batch_max: int = 2000
    chunk_records: int = 512
    batch_within_s: float = 0.1
    tick_s: float = 0.25
    flows: FlowResolver | None = None   # a topology's flows (latscope.settings.flow_resolver)
    manager: str | None = None
    raw_samples: bool = True       # a sink, when there is one, gets every sample too
    # sampling.filter_retrans, as the agents read it: breakdowns of resent bytes are dropped
    # (counted), else published flagged, their statistics apart (pipeline.RESENT)
    filter_retrans: bool = True
    from_beginning: bool = True
    clock_hold_s: float = 30.0
    default_partitions: int = LAYER_EVENTS_PARTITIONS
    # The commit barrier blocks the event loop at most this long for acknowledgements;
    # what is not acknowledged by then keeps its offsets (and changelog) from moving.
    barrier_wait_s: float = 2.0
    # Commit intervals whose outputs may await acknowledgement before a barrier waits for
    # the oldest (backpressure: a slow sink slows the worker instead of piling up input).
    barrier_max_behind: int = 3
    # Bounds on what grows with flows and series (stream/bounded.py): past them the oldest
    # pending samples and open windows close early, the least recently closed series'
    # totals are forgotten, and undeclared flows past per_pair a host pair are tagged
    # "other"; every one counted.
    max_pending: int = 500_000
    max_open_windows: int = 200_000
    max_series: int = 20_000
    max_clock_hosts: int = 4096    # a model for one more host is dead-lettered
    flow_tags_per_pair: int = 64
    flow_tag_idle_s: float = 300.0
    # How often Faust commits the offsets of what is done, s; how long a dead worker's
    # partitions wait before the group hands them on (None: Faust's default).
    commit_interval_s: float = 1.0
    session_timeout_s: float | None = None

    @property
    def state_dir(self) -> Path:
        return self.data_dir or cache_dir() / "stream" / self.app_id
