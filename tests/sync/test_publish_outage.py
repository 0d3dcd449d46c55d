"""The clock publisher with its broker gone (a private broker, stopped by its PID): every
call returns within its deadline, close() within its timeout, and every record is counted
delivered, failed or undelivered. ``assert_publisher_survives_outage`` is the core check."""

from __future__ import annotations

import os
import threading
import time

import pytest
from private_kafka import private_kafka

from latscope.sync.estimator import Model
from latscope.sync.publish import ClockPublisher

pytestmark = pytest.mark.stack

WAIT_S = 0.2        # produce_wait_s
CLOSE_S = 2.0
RECORDS = 50


def _model(i: int) -> Model:
    return Model(ref_ns=i, offset_ns=1000.0 + i, drift_ppm=1.0, error_bound_ns=100.0,
                 samples=8, min_delay_ns=20_000.0, residual_ns=0.0, negative_delays=0,
                 negative_one_way=0)


def assert_publisher_survives_outage(pub: ClockPublisher, stop_broker: object) -> None:
    """One record delivered, the broker stopped, RECORDS more: no call blocks past its
    deadline, and delivered + failed + undelivered accounts for every record."""
    pub.model("h1", _model(0))
    assert pub.flush(20) == 0 and pub.delivered == 1
    stop_broker()   # type: ignore[operator]
    slowest = [0.0]

    def publish_then_close() -> None:
        for i in range(RECORDS):
            t = time.monotonic()
            pub.model("h1", _model(i + 1))
            slowest[0] = max(slowest[0], time.monotonic() - t)
        t = time.monotonic()
        pub.close(CLOSE_S)
        slowest.append(time.monotonic() - t)

    th = threading.Thread(target=publish_then_close, daemon=True)
    th.start()
    th.join(RECORDS * WAIT_S + CLOSE_S + 20)
    assert not th.is_alive(), "the publisher blocked with the broker gone"
    assert slowest[0] < WAIT_S + 0.5, f"one produce took {slowest[0]:.2f} s"
    assert slowest[1] < CLOSE_S + 1.0, f"close took {slowest[1]:.2f} s"
    assert pub.delivered == 1
    assert pub.delivered + pub.failed + pub.undelivered == RECORDS + 1
    assert pub.undelivered > 0 and pub.failed > 0   # some still queued, some never queued


def test_clock_publisher_stops_cleanly_with_the_broker_gone() -> None:
    run = f"lsxf{os.environ['LSX_RUN_ID']}"
    with private_kafka(f"{run}-kafka-") as broker:
        pub = ClockPublisher(broker.bootstrap, manager="mgr", models_topic=f"{run}.clock",
                             samples_topic=f"{run}.clock-samples", produce_wait_s=WAIT_S,
                             delivery_timeout_s=60, queue_max=20)
        assert_publisher_survives_outage(pub, broker.stop)
