"""What a sync manager runs with (resolved by ``latscope.settings``; a responder's settings are
the fields of its own dataclass)."""

from __future__ import annotations

from dataclasses import dataclass, field

from latscope.kafka import KafkaSettings
from latscope.schemas.records import TOPIC_CLOCK, TOPIC_CLOCK_SAMPLES
from latscope.sync.keys import SyncKeys
from latscope.sync.manager import Target


@dataclass(frozen=True)
class ManagerSettings:
    targets: list[Target]
    keys: SyncKeys
    name: str = "manager"
    netns: str | None = None
    interval_s: float = 1.0
    burst: int = 4
    window_s: float = 60.0
    kafka: KafkaSettings | None = field(default_factory=KafkaSettings)   # None: publish nothing
    models_topic: str = TOPIC_CLOCK
    samples_topic: str = TOPIC_CLOCK_SAMPLES
