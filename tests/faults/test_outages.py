"""Outages of the services the pipeline depends on: the private Kafka broker and the private
InfluxDB (never the shared ones) are stopped by PID for 20 s mid-run, then restarted, while
the agents sample a paced flow and the worker joins it."""

from __future__ import annotations

import contextlib
import time
from dataclasses import asdict

import pytest
from accounting import Records
from influx_points import windows_in_influx
from kafka_helpers import events_in_topic

from latscope.lab import traffic
from latscope.lab.demo import pipeline
from latscope.procs import wait_for
from latscope.schemas.records import TOPIC_LAYER_EVENTS
from latscope.sinks.settings import InfluxSettings

pytestmark = [pytest.mark.root, pytest.mark.stack]

OUTAGE_S = 20.0
BEFORE_S = 5.0        # traffic sampled and joined before the fault
AFTER_S = 8.0         # and after the service is back


def test_broker_outage_loses_no_sampled_record(fault_options, private_stack, fault_row) -> None:
    """Every record the agents made during a 20 s broker outage is joined once the broker
    is back, or counted by them as failed: nothing is lost uncounted. The agents' own
    counters and the topic's contents are the truth; the worker's counts are checked
    against them."""
    opts = fault_options()
    with pipeline(opts) as p:
        assert not p.missing, p.missing
        started = time.monotonic()
        (run,) = traffic.start_flows(p.net, duration_s=BEFORE_S + OUTAGE_S + AFTER_S + 10)
        time.sleep(BEFORE_S)
        before = p.worker.summary()["counters"]["records"]
        assert before > 0, "nothing joined before the fault"
        private_stack.stop_kafka()
        time.sleep(OUTAGE_S)
        private_stack.start_kafka()
        back = time.monotonic()
        made = sum(a["counters"]["records"] for a in p.agents.status().values())
        # Recovery: until the worker has read every record the agents had made by then
        # (a miss shows in the row and the accounting below).
        recovery_s = None
        with contextlib.suppress(TimeoutError):
            p.worker.wait_until(lambda s: s["counters"]["records"] >= made, 60,
                                "the outage's records")
            recovery_s = round(time.monotonic() - back, 1)
        result = run.wait(BEFORE_S + OUTAGE_S + AFTER_S + 40)
        summary = p.finish(time.monotonic() - started, [result])
        agents = p.agents.status()
    topic = opts.topic(TOPIC_LAYER_EVENTS)
    rec = Records.of(agents, summary["worker"]["counters"],
                     events_in_topic(p.kafka.agent.bootstrap, topic))
    fault_row("Kafka broker stopped 20 s", offered=rec.offered, joined=rec.joined,
              lost=rec.lost + rec.miscounted,
              dead_lettered=summary["counters"]["dead_lettered"], recovery_s=recovery_s,
              detail=asdict(rec) | {"miscounted": rec.miscounted})
    assert result["receiver"]["bytes"] > 0
    assert rec.in_topic == rec.delivered, rec
    assert rec.lost == 0 and rec.miscounted == 0, rec
    assert rec.late == 0, rec
    assert summary["counters"]["dead_lettered"] == 0


def test_influxdb_outage_loses_no_window_point(fault_options, private_stack, fault_row) -> None:
    """Every window statistics point the worker closed while InfluxDB was stopped for 20 s
    is in InfluxDB once it is back (read back from InfluxDB itself), none counted failed."""
    opts = fault_options()
    info = private_stack.info
    influx = InfluxSettings(info.influx_url, info.influx_org, info.influx_bucket,
                            info.influx_token or "")
    with pipeline(opts) as p:
        assert not p.missing, p.missing
        started = time.monotonic()
        (run,) = traffic.start_flows(p.net, duration_s=BEFORE_S + OUTAGE_S + AFTER_S)
        at_stop = p.worker.wait_until(lambda s: s["counters"]["window_closed"] > 0, 30,
                                      "a closed window")["counters"]["window_closed"]
        private_stack.stop_influxdb()
        time.sleep(OUTAGE_S)
        during = p.worker.summary()["counters"]
        private_stack.start_influxdb()
        back = time.monotonic()
        # Recovery: until InfluxDB holds every window the worker had closed by then (a miss
        # shows in the row and the count below).
        recovery_s = None
        with contextlib.suppress(TimeoutError):
            wait_for(lambda: windows_in_influx(influx, opts.run_id) >= during["window_closed"],
                     90, "the outage's windows in InfluxDB", interval=0.5)
            recovery_s = round(time.monotonic() - back, 1)
        result = run.wait(BEFORE_S + OUTAGE_S + AFTER_S + 30)
        summary = p.finish(time.monotonic() - started, [result])
        # The worker flushes InfluxDB when it stops: count after that.
        p.worker.stop()
    c = summary["worker"]["counters"]
    found = windows_in_influx(influx, opts.run_id)
    closed = c["window_closed"]
    fault_row("InfluxDB stopped 20 s", offered=closed, joined=found, lost=closed - found,
              recovery_s=recovery_s,
              detail={"closed_during_outage": during["window_closed"] - at_stop,
                      "lines_failed": c["influx_lines_failed"],
                      "windows_failed": c["influx_windows_failed"],
                      "batches_retried": c["influx_batches_retried"]})
    assert closed > during["window_closed"] > at_stop, \
        "windows must close during the outage and after it"
    assert c["influx_batches_retried"] > 0, "InfluxDB never refused a write: no outage seen"
    assert found == closed, (found, closed, c)
    assert c["influx_windows_failed"] == 0 and c["influx_lines_failed"] == 0, c
