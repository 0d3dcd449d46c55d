"""Clock samples and models through the real Kafka broker, and `latscope sync status`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic
from sync_testnet import TARGETS, SyncNet

from latscope.schemas import codec
from latscope.sync.estimator import EstimatorConfig
from latscope.sync.manager import Manager, Target
from latscope.sync.publish import ClockPublisher, TopicError
from latscope.sync.status import read_models

pytestmark = [pytest.mark.root, pytest.mark.stack]


def _records(bootstrap: str, topic: str) -> list[tuple[bytes, bytes]]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"{topic}-reader",
                  "enable.auto.commit": False})
    try:
        _lo, hi = c.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
        c.assign([TopicPartition(topic, 0, 0)])
        out: list[tuple[bytes, bytes]] = []
        while len(out) < hi:
            msg = c.poll(5)
            assert msg is not None, f"{topic}: {len(out)}/{hi} records read"
            if not msg.error():
                out.append((msg.key(), msg.value()))
        return out
    finally:
        c.close()


def test_models_and_samples_reach_kafka(sync_net: SyncNet, stack, topic_name: str) -> None:
    net = sync_net.net
    models_topic, samples_topic = f"{topic_name}-clock", f"{topic_name}-samples"
    pub = ClockPublisher(stack.kafka_bootstrap, manager="mgr", models_topic=models_topic,
                         samples_topic=samples_topic)
    names = ["h1-v4", "h3-v6"]
    mgr = Manager([Target(n, TARGETS[n][1]) for n in names], sync_net.keys,
                  netns=net.ns_name("mgr"), interval_s=0.05,
                  estimator=EstimatorConfig(window_ns=3_000_000_000, bucket_ns=50_000_000),
                  on_sample=pub.sample, on_model=pub.model, name="mgr")
    with mgr:
        mgr.run(duration_s=2.0)
        sent = {n: st.samples for n, st in mgr.hosts.items()}
    assert pub.flush(15) == 0
    assert pub.failed == 0 and pub.delivered == pub.produced

    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    res = ConfigResource(ConfigResource.Type.TOPIC, models_topic)
    assert admin.describe_configs([res])[res].result()["cleanup.policy"].value == "compact"

    models, bad = read_models(stack.kafka_bootstrap, models_topic)
    assert bad == 0
    assert set(models) == set(names)
    for n in names:
        m = models[n]
        truth = net.clock(TARGETS[n][0]).true_offset(m["ref_ns"])
        assert abs(m["offset_ns"] - truth) <= m["error_bound_ns"]
        assert m["manager"] == "mgr" and m["samples"] >= 3

    samples = _records(stack.kafka_bootstrap, samples_topic)
    assert len(samples) == sum(sent.values())
    key, value = samples[0]
    _name, rec = codec.decode(value, expect="ClockSample")
    assert key.decode() == rec["host"] and rec["host"] in names
    assert rec["delay_ns"] == (rec["t4_ns"] - rec["t1_ns"]) - (rec["t3_ns"] - rec["t2_ns"])

    out = subprocess.run([sys.executable, "-m", "latscope", "sync", "status", "--json",
                          "--bootstrap", stack.kafka_bootstrap, "--topic", models_topic],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    rows = {r["host"]: r for r in json.loads(out.stdout)["hosts"]}
    assert set(rows) == set(names)
    for n in names:
        assert rows[n]["offset_ns"] == models[n]["offset_ns"]
        assert 0 <= rows[n]["age_s"] < 120


def test_refuses_a_deleting_model_topic(stack, topic_name: str) -> None:
    admin = AdminClient({"bootstrap.servers": stack.kafka_bootstrap})
    admin.create_topics([NewTopic(topic_name, 1, 1)])[topic_name].result()
    with pytest.raises(TopicError, match=r"cleanup\.policy=delete"):
        ClockPublisher(stack.kafka_bootstrap, models_topic=topic_name,
                       samples_topic=f"{topic_name}-samples")
