"""The compacted-topic follower on a real broker (the worker's clock models, the agents'
stride demands): one started before its topic had any partition still reads what is
published to it later, and one started after reads everything already there before it
goes on (catch_up)."""

from __future__ import annotations

import time

import pytest

from latscope import kafka
from latscope.topic_follow import TopicFollower

pytestmark = pytest.mark.stack


def _publish(bootstrap: str, topic: str, models: dict[bytes, bytes]) -> None:
    p = kafka.producer(bootstrap)
    for k, v in models.items():
        p.produce(topic, v, key=k)
    assert p.flush(10) == 0


def test_follower_reads_a_topic_created_after_it_started(stack, topic_name) -> None:
    seen: dict[bytes | None, bytes | None] = {}
    f = TopicFollower(stack.kafka_bootstrap, topic_name, topic_name, seen.__setitem__)
    try:
        f.catch_up(timeout=2)          # nothing to read: returns at once, no error
        assert seen == {}
        kafka.ensure_topics(stack.kafka_bootstrap, {topic_name: (2, {})})
        _publish(stack.kafka_bootstrap, topic_name, {b"h1": b"m1", b"h2": b"m2"})
        deadline = time.monotonic() + 20
        while len(seen) < 2 and time.monotonic() < deadline:
            f.poll(0.2)
            time.sleep(0.05)
        assert seen == {b"h1": b"m1", b"h2": b"m2"}
    finally:
        f.close()


def test_catch_up_reads_every_model_already_there(stack, topic_name) -> None:
    kafka.ensure_topics(stack.kafka_bootstrap, {topic_name: (3, {})})
    models = {f"h{i}".encode(): f"m{i}".encode() for i in range(30)}
    _publish(stack.kafka_bootstrap, topic_name, models)
    seen: dict[bytes | None, bytes | None] = {}
    f = TopicFollower(stack.kafka_bootstrap, topic_name, topic_name, seen.__setitem__)
    try:
        f.catch_up(timeout=20)
        assert seen == models
    finally:
        f.close()
