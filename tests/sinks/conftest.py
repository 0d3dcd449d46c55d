"""InfluxDB settings of the running local stack, and a run tag that isolates a test's points."""

from __future__ import annotations

import uuid

import pytest

from latscope.sinks.settings import InfluxSettings


@pytest.fixture
def run_tag() -> str:
    return f"lsxd-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def influx(stack, run_tag: str) -> InfluxSettings:
    return InfluxSettings(stack.influx_url, stack.influx_org, stack.influx_bucket,
                          stack.influx_token, tags={"run": run_tag}, flush_interval_ms=200)
