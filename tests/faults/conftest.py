"""The fault suite's fixtures: a PRIVATE Kafka and InfluxDB (their own ports and data
directory, started with the stack/ code) that the outage tests may stop and restart by PID,
the shared local stack never touched; and a pipeline on the suite's topology pointed at it.
Each test reports its row of ``benchmarks/faults.py``'s table with ``fault_row``
(tests/conftest.py), as do the sync tests this suite leans on (see that benchmark)."""

from __future__ import annotations

import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fault_net import PREFIX, TOPOLOGY
from private_kafka import listen_ports

from latscope.lab import netns
from latscope.lab.demo import DemoOptions
from latscope.procs import free_port
from latscope.stack import services


@dataclass
class PrivateStack:
    """One Kafka and one InfluxDB of this suite's own, under ``settings.runs``."""

    settings: services.StackSettings

    @property
    def info(self) -> services.StackInfo:
        return services.status(self.settings)

    def stop_kafka(self) -> None:
        assert self.settings.kafka().stop(), "the private Kafka was not running"

    def start_kafka(self) -> None:
        self.settings.kafka().start()

    def stop_influxdb(self) -> None:
        assert self.settings.influxdb().stop(), "the private InfluxDB was not running"

    def start_influxdb(self) -> None:
        self.settings.influxdb().start()


@pytest.fixture(scope="session")
def private_stack() -> Iterator[PrivateStack]:
    """Started once for the suite (the JVM and influxd take seconds each), stopped by the
    PIDs in its own run directory and deleted afterwards, failures included."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}-stack-"))
    port = listen_ports(3)    # Kafka, its controller (+1), InfluxDB (+2)
    settings = services.StackSettings(run_dir=run_dir, kafka_port=port, influx_port=port + 2)
    try:
        info = services.up(settings)
        assert info.kafka_bootstrap != "127.0.0.1:9092" and not info.influx_url.endswith(":8086")
        yield PrivateStack(settings)
    finally:
        services.down(settings)
        shutil.rmtree(run_dir, ignore_errors=True)


@pytest.fixture
def fault_options(private_stack: PrivateStack) -> Callable[..., DemoOptions]:
    """DemoOptions for the suite's topology on the private stack, fresh topics and run id."""
    def make(**overrides: Any) -> DemoOptions:
        tag = f"{PREFIX}-{uuid.uuid4().hex[:6]}"
        opts: dict[str, Any] = {
            "topology": TOPOLOGY, "prefix": PREFIX, "topic_prefix": tag,
            "web_port": free_port(), "start_stack": False, "run_id": tag,
            "stack": private_stack.settings}
        return DemoOptions(**(opts | overrides))
    return make


@pytest.fixture(scope="session", autouse=True)
def _no_namespaces_left() -> Iterator[None]:
    yield
    left = netns.teardown(PREFIX)   # a crashed test's leftovers, if any
    assert not netns.list_namespaces(PREFIX), left
