"""Two workers with one app id split the partitions and between them join every sample; a
worker killed after a commit while InfluxDB held its writes leaves nothing unwritten
(tests/faults has a worker killed before and after a commit)."""

from __future__ import annotations

import os
import signal
import time

import pytest
from influx_points import windows_in_influx
from kafka_helpers import wait_committed

from latscope import kafka
from latscope.bpf.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.procs import free_port, wait_for
from latscope.schemas import codec
from latscope.sinks.influx_writer import delete_run
from latscope.sinks.settings import InfluxSettings
from latscope.stream.kafkaio import consume, produce
from latscope.stream.process import WorkerProcess
from latscope.stream.synthetic import PathSpec, clock_model, encoded, sample_records

pytestmark = pytest.mark.stack


def test_two_workers_split_partitions(stack, topics, tmp_path, run_tag) -> None:
    def worker(name: str) -> WorkerProcess:
        return WorkerProcess(
            ["--bootstrap", stack.kafka_bootstrap, "--app-id", run_tag,
             "--data-dir", str(tmp_path / name),
             "--topology", str(REPO_ROOT / "topologies/default.yaml"), "--no-influx",
             *topics.args()], free_port(), tmp_path / f"{name}.log")

    with worker("a") as a, worker("b") as b:
        a.wait_ready()
        b.wait_ready()
        # The first worker gives up half of its partitions in the rebalance.
        parts = {}
        for w in (a, b):
            parts[w] = w.wait_until(lambda s: 0 < len(s["partitions"]) < 4, 90,
                                    "a share of the partitions")["partitions"]
        assert sorted(parts[a] + parts[b]) == [0, 1, 2, 3]

        # Clock models reach both workers (each reads the clock topic itself), whoever owns
        # the clock partition in the group.
        models = [clock_model(h, o) for h, o in (("h1", 5_000_000), ("h2", -3_000_000))]
        produce(stack.kafka_bootstrap, topics.clock, encoded("ClockModel", models, "host"))
        for w in (a, b):
            w.wait_until(lambda s: set(s["clock"]) == {"h1", "h2"}, 60, "both clock models")

        specs = [PathSpec(["h1", "h2", "c1"], flow={
            "proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
            "sport": 41000 + i, "dport": 5201}) for i in range(16)]
        t0 = monotonic_ns()
        recs = [r for i in range(400) for r in sample_records(specs[i % 16], i, t0 + i)]
        produce(stack.kafka_bootstrap, topics.layer, encoded("LayerEvent", recs, "flow_id"))
        msgs = consume(stack.kafka_bootstrap, topics.breakdowns, lambda m: len(m) >= 400)
        keys = {(bd["flow_id"], bd["seq"]) for bd in
                (codec.decode(m.value(), expect="Breakdown")[1] for m in msgs)}
        assert len(keys) == 400
        pub = [w.wait_until(lambda s: s["counters"]["published"] > 0, 30, "work")
               ["counters"]["published"] for w in (a, b)]
        assert sum(pub) >= 400 and min(pub) > 0, pub


def test_closed_windows_reach_influxdb_though_killed_after_commit(stack, topics, tmp_path, run_tag,
                                                                   influx_proxy) -> None:
    """A window closes, InfluxDB does not answer (a proxy holds the writes), the worker
    commits and is SIGKILLed: the window's points never arrived, so its stats entry must
    still be in the changelog (not tombstoned), and the next worker closes and writes it
    again. Every window of what was fed ends up in InfluxDB."""
    app_id = run_tag

    def worker(name: str, env: dict[str, str] | None = None) -> WorkerProcess:
        # windows close once the watermark (quiet partitions: now less twice window +
        # lateness) passes their end by the lateness, 13 s after it: time to commit first.
        # The killed worker's partitions move after the group's session timeout: 8 s, not
        # Faust's minute, which the second worker would otherwise wait out.
        return WorkerProcess(
            ["--bootstrap", stack.kafka_bootstrap, "--app-id", app_id,
             "--data-dir", str(tmp_path / name), "--interval", "1", "--window", "1.5",
             "--lateness", "3", "--session-timeout", "8",
             "--topology", str(REPO_ROOT / "topologies/default.yaml"),
             "--influx-tag", f"run={run_tag}", *topics.args()],
            free_port(), tmp_path / f"{name}.log", env)

    spec = PathSpec(["h1", "h2", "c1"], flow={"proto": "tcp", "family": 4, "src": "10.1.0.1",
                                            "dst": "10.2.0.2", "sport": 43000, "dport": 5201})
    n_windows, per_window = 3, 40
    expected = n_windows * 16     # per window: 15 segments and the end-to-end delay
    influx = InfluxSettings(stack.influx_url, stack.influx_org, stack.influx_bucket,
                            stack.influx_token)
    try:
        with worker("a", {"LATSCOPE_INFLUX_PORT": str(influx_proxy.port)}) as a:
            a.wait_ready()
            produce(stack.kafka_bootstrap, topics.clock, encoded(
                "ClockModel", [clock_model(h, 0) for h in ("h1", "h2")], "host"))
            # Samples in the middle of three whole seconds starting 6 s from now (windows
            # of 1 s on the worker's wall clock, which maps the reference clock the same).
            wall_minus_ref = time.time_ns() - monotonic_ns()
            first = (time.time_ns() // 10**9 + 6) * 10**9
            recs = [r for w in range(n_windows) for i in range(per_window)
                    for r in sample_records(spec, (w * per_window + i) * 1448,
                                            first + w * 10**9 + 300_000_000 + i * 10_000_000
                                            - wall_minus_ref)]
            produce(stack.kafka_bootstrap, topics.layer, encoded("LayerEvent", recs, "flow_id"))
            wait_committed(stack.kafka_bootstrap, app_id, topics.layer, len(recs))
            summ = a.summary()["counters"]
            assert summ["complete"] == n_windows * per_window
            assert summ["window_closed"] == 0, "windows closed before the test held InfluxDB"

            influx_proxy.hold()
            closed = a.wait_until(lambda s: s["counters"]["window_closed"] == expected, 60,
                                  "every window closed")["counters"]
            # Right after a commit: one that tombstoned the windows (a worker that does not
            # wait for InfluxDB) or, if none does, two commits after they closed.
            changelog = Tombstones(stack.kafka_bootstrap, f"{app_id}-stats-changelog")
            try:
                wait_for(lambda: changelog.count() >= expected or a.summary()["counters"].get(
                    "commits", 0) >= closed.get("commits", 0) + 2, 30, "a commit",
                         alive=lambda: a.proc is not None and a.proc.poll() is None)
                tombstoned = changelog.count()
            finally:
                changelog.close()
            os.kill(a.proc.pid, signal.SIGKILL)
            a.proc.wait(10)

        with worker("b") as b:   # InfluxDB directly
            b.wait_until(lambda s: s["partitions"] == [0, 1, 2, 3], 150, "every partition")
            found = 0
            deadline = time.monotonic() + 60
            while found < expected and time.monotonic() < deadline:
                found = windows_in_influx(influx, run_tag)
                time.sleep(0.5)   # polling InfluxDB's answer, not waiting for it to happen
        assert found == expected, (f"{found} of {expected} closed windows in InfluxDB; "
                                   f"{tombstoned} tombstoned before InfluxDB had them")
        assert tombstoned == 0
    finally:
        delete_run(influx, run_tag)


class Tombstones:
    """A table's changelog read from its start: how many keys it now says are deleted."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._c = kafka.consumer(bootstrap, **{"auto.offset.reset": "earliest",
                                               "enable.auto.commit": False})
        self._c.subscribe([topic])
        self._latest: dict[bytes, bytes | None] = {}

    def count(self) -> int:
        for msg in self._c.consume(1000, 0.2):
            if not msg.error():
                self._latest[msg.key()] = msg.value()
        return sum(v is None for v in self._latest.values())

    def close(self) -> None:
        self._c.close()
