"""What a sync manager and a sync responder run with (resolved by ``latscope.settings``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from latscope.bpf.clock import ClockInjection
from latscope.kafka import KafkaSettings
from latscope.schemas.records import TOPIC_CLOCK, TOPIC_CLOCK_SAMPLES
from latscope.sync.keys import SyncKeys
from latscope.sync.manager import Target
from latscope.sync.responder import DEFAULT_PORT


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


@dataclass(frozen=True)
class ResponderSettings:
    ifname: str
    keys: SyncKeys
    allow: list[str]
    netns: str | None = None
    port: int = DEFAULT_PORT
    injection: ClockInjection = field(default_factory=ClockInjection)
    addresses: list[str] | None = None   # None: every address of ifname
    xdp_mode: str = "auto"
