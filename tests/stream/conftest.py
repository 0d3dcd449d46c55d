"""A real stream worker on fresh topics, and helpers to feed and read Kafka."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from latscope.paths import REPO_ROOT
from latscope.procs import free_port
from latscope.stream.process import WorkerProcess

TOPOLOGY = REPO_ROOT / "topologies" / "default.yaml"


@dataclass
class Topics:
    layer: str
    clock: str
    breakdowns: str
    dead_letter: str

    def args(self) -> list[str]:
        return ["--layer-topic", self.layer, "--clock-topic", self.clock,
                "--breakdown-topic", self.breakdowns, "--dead-letter-topic", self.dead_letter]


@pytest.fixture
def topics(topic_name: str) -> Topics:
    return Topics(f"{topic_name}-layer", f"{topic_name}-clock", f"{topic_name}-bd",
                  f"{topic_name}-dlq")


@pytest.fixture
def run_tag() -> str:
    return f"lsxd-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def worker(stack, topics: Topics, tmp_path: Path, run_tag: str) -> Iterator[WorkerProcess]:
    """One worker with the default topology, short windows, InfluxDB points tagged run=…"""
    w = WorkerProcess(
        ["--bootstrap", stack.kafka_bootstrap, "--app-id", f"lsxd-{run_tag}",
         "--data-dir", str(tmp_path / "state"), "--topology", str(TOPOLOGY),
         "--interval", "1", "--window", "1.5", "--lateness", "0.5",
         "--influx-tag", f"run={run_tag}", *topics.args()],
        free_port(), tmp_path / "worker.log")
    with w:
        w.wait_ready()
        yield w
