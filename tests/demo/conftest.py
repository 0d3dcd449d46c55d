"""Run the real demo (namespaces, eBPF agents, XDP sync, Kafka, Faust, InfluxDB) for tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from latscope.lab import netns
from latscope.lab.demo import DemoOptions, run_demo
from latscope.procs import free_port

PREFIX = "lsxd" + os.environ["LSX_RUN_ID"]


@pytest.fixture(scope="session")
def demo_runner() -> Iterator[Callable[..., dict]]:
    """run(topology, duration, sysctls, **DemoOptions fields) -> summary; each run on its own
    topics and run tag."""
    def run(topology: Path, duration: float = 10.0,
            sysctls: dict[str, dict[str, str]] | None = None, **options: Any) -> dict:
        opts = DemoOptions(topology=topology, duration_s=duration, prefix=PREFIX,
                           sysctls=sysctls or {},
                           topic_prefix=f"{PREFIX}-{uuid.uuid4().hex[:8]}", web_port=free_port(),
                           start_stack=False, run_id=f"{PREFIX}-{uuid.uuid4().hex[:8]}", **options)
        return run_demo(opts)

    try:
        yield run
    finally:
        left = netns.teardown(PREFIX)   # a crashed run's leftovers, if any
        assert not netns.list_namespaces(PREFIX), left
