"""The worker's outputs with the broker gone (a private broker, stopped by its PID): a
commit barrier waits at most its deadline once, later barriers do not block the event loop
at all, nothing unacknowledged is acknowledged, and closing returns within its timeout.
``assert_barrier_never_blocks_long`` is the core check."""

from __future__ import annotations

import os
import time

import pytest
from private_kafka import private_kafka

from latscope import kafka
from latscope.stream.outputs import Outputs

pytestmark = pytest.mark.stack

WAIT_S = 1.0


def assert_barrier_never_blocks_long(out: Outputs, acked: list, topic: str,
                                     stop_broker: object) -> None:
    for i in range(20):
        out.publish(topic, b"k", b"v%d" % i)
    out.hold("stream", ["m1"])
    assert out.producer.flush(30) == 0   # a new broker: the producer's first acks take a while
    assert out.barrier([]) is True and acked == ["m1"]
    stop_broker()   # type: ignore[operator]
    took = []
    for n in range(5):
        for i in range(20):
            out.publish(topic, b"k", b"late%d" % i)
        out.hold("stream", [f"m{n + 2}"])
        t = time.monotonic()
        assert out.barrier([], drain=n == 4) is False
        took.append(time.monotonic() - t)
    assert took[0] < WAIT_S + 0.5, took            # the first waits its deadline, no longer
    assert max(took[1:]) < 0.1, took                # the rest only look
    assert acked == ["m1"] and out.counters.commits_held_back == 5
    t = time.monotonic()
    out.close()
    assert time.monotonic() - t < 10 + 1.0          # close's own flush timeout
    assert acked == ["m1"]


def test_barrier_and_close_with_the_broker_gone() -> None:
    run = f"lsxf{os.environ['LSX_RUN_ID']}"
    with private_kafka(f"{run}-kafka-") as broker:
        topic = f"{run}.outputs"
        kafka.ensure_topics(broker.bootstrap, {topic: (1, {})})
        acked: list = []
        out = Outputs(broker.bootstrap, None, lambda rec: None,
                      lambda owner, batch: acked.extend(batch), wait_s=WAIT_S)
        assert_barrier_never_blocks_long(out, acked, topic, broker.stop)
