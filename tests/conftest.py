"""Shared fixtures: the real local stack and root checks. Stage-specific fixtures live in
``tests/<stage>/conftest.py``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from needs import missing, strict

from latscope import kafka
from latscope.stack import services as stack_mod

# Every namespace, link and consumer group a test makes carries this run's id (`lsx<tag><id>`),
# so two suites on one machine never tear down or read each other's resources.
RUN_ID = os.environ.setdefault("LSX_RUN_ID", uuid.uuid4().hex[:3])
FAULT_ROWS_ENV = "LATSCOPE_FAULTS_OUT"   # benchmarks/faults.py collects fault_row's rows here


_SESSION_PID = os.getpid()


def _terminated(sig: int, _frame: object) -> None:
    """SIGTERM in pytest's own process is an interrupt; in a process forked from it, the
    default death. pyroute2 forks a child per namespace socket and ends it with SIGTERM;
    a child that raised instead would unwind into a second copy of the test session."""
    if os.getpid() != _SESSION_PID:
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    raise KeyboardInterrupt("SIGTERM")


def pytest_configure(config: pytest.Config) -> None:
    """A terminated run (kill, a CI timeout) ends as an interrupted one: pytest then tears
    down the fixtures it set up (namespaces, agents, topics), which SIGTERM's default skips."""
    signal.signal(signal.SIGTERM, _terminated)


# A test's Kafka topics: `lsx<tag><run id>` then `-` or `.`; swept when the session ends.
RUN_TOPIC = re.compile(rf"lsx[a-z]*{RUN_ID}[-.]")


@pytest.fixture(scope="session")
def stack() -> Iterator[stack_mod.StackInfo]:
    """The running local Kafka + InfluxDB (``.ci/run`` starts them with ``latscope stack up``).
    At the end, this run's topics go: a broker that keeps every run's (thousands) makes a
    new consumer's rebalance take over a minute."""
    info = stack_mod.status(stack_mod.StackSettings.from_env())
    down = [n for n, up in (("kafka", info.kafka_up), ("influxdb", info.influx_up)) if not up]
    if down:
        missing(f"local stack not running ({', '.join(down)} down): run `latscope stack up`")
    yield info
    try:
        gone = kafka.delete_topics(info.kafka_bootstrap, RUN_TOPIC.match)
    except Exception as e:     # a failed sweep must not hide the tests' own result
        print(f"\nthis run's Kafka topics were not deleted: {e}")
    else:
        print(f"\ndeleted this run's {len(gone)} Kafka topics")


@pytest.fixture(scope="session")
def fleet_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The LatScope wheel ``fleet up`` ships, built once per run."""
    from latscope.fleet.bundle import build_latscope_wheel

    return build_latscope_wheel(tmp_path_factory.mktemp("fleet-wheel"))


@pytest.fixture
def topic_name() -> str:
    """A fresh topic name per test, so runs never read each other's records."""
    return f"lsxt{RUN_ID}-{uuid.uuid4().hex[:10]}"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0 or not any("root" in item.keywords for item in items):
        return
    if strict():
        raise pytest.UsageError("the suite needs root (eBPF, network namespaces): run it as "
                                "root, or run a developer's plain `pytest` to skip those tests")
    skip = pytest.mark.skip(reason="needs root (eBPF, network namespaces)")
    for item in items:
        if "root" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def scratch_netns() -> Iterator[str]:
    """A fresh namespace with `lo` up (and 127.0.0.1, ::1), removed even when the test fails."""
    name = f"lsxn{RUN_ID}-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def fault_row(request: pytest.FixtureRequest) -> Callable[..., None]:
    """Report one row of the fault table: what was offered, joined, lost, dead-lettered and
    how long recovery took. ``lost`` is the figure the must-hold rule requires to be 0;
    ``limits`` adds rules of the row's own, name: (value, most allowed)."""
    def record(fault: str, *, offered: int, joined: int | None, lost: int,
               dead_lettered: int = 0, recovery_s: float | None = None,
               detail: dict | None = None,
               limits: dict[str, tuple[float, float]] | None = None) -> None:
        row = {"fault": fault, "offered": offered, "joined": joined, "lost": lost,
               "dead_lettered": dead_lettered, "recovery_s": recovery_s,
               "test": request.node.nodeid, "detail": detail or {},
               "limits": limits or {}}
        print(f"\nfault row: {json.dumps(row)}")
        if out := os.environ.get(FAULT_ROWS_ENV):
            with open(out, "a") as f:
                f.write(json.dumps(row) + "\n")
    return record
