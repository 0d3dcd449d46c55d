"""The real local services: Avro through Kafka to both clients, a point through InfluxDB."""

from __future__ import annotations

import asyncio
import os
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from latscope.schemas import codec
from latscope.schemas.records import flow_id
from latscope.stack.services import StackInfo

FLOW = {"proto": "udp", "family": 4, "src": "10.1.0.1", "dst": "10.1.0.2", "sport": 9, "dport": 53}


def _records(n: int) -> list[dict]:
    return [{"host": f"h{i % 3}", "flow_id": flow_id(FLOW), "flow": FLOW, "seq": i * 72400,
             "hits": [{"point": "dev_xmit", "ts_ns": 1000 + i, "ifindex": 3, "dev": "veth0"}]}
            for i in range(n)]


def _produce(bootstrap: str, topic: str, records: list[dict]) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=2, replication_factor=1)])[topic].result(15)
    delivered: list[object] = []
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True,
                         "compression.type": "zstd", "linger.ms": 20})
    for r in records:
        producer.produce(topic, key=r["flow_id"], value=codec.encode("LayerEvent", r),
                         on_delivery=lambda err, msg: delivered.append(err or msg))
    assert producer.flush(15) == 0
    assert all(not isinstance(d, Exception) and d.error() is None for d in delivered)  # type: ignore[union-attr]
    assert len(delivered) == len(records)


def test_avro_through_kafka_to_both_clients(stack: StackInfo, topic_name: str) -> None:
    records = _records(20)
    _produce(stack.kafka_bootstrap, topic_name, records)

    consumer = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": topic_name,
                         "auto.offset.reset": "earliest"})
    consumer.subscribe([topic_name])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < len(records) and time.monotonic() < deadline:
        msg = consumer.poll(0.5)
        if msg is not None and msg.error() is None:
            got.append(codec.decode(msg.value(), expect="LayerEvent")[1])
    consumer.close()
    assert sorted(r["seq"] for r in got) == [r["seq"] for r in records]

    async def with_aiokafka() -> list[dict]:
        from aiokafka import AIOKafkaConsumer

        c = AIOKafkaConsumer(topic_name, bootstrap_servers=stack.kafka_bootstrap,
                             group_id=f"{topic_name}-aio", auto_offset_reset="earliest")
        await c.start()
        out: list[dict] = []
        try:
            async with asyncio.timeout(30):
                while len(out) < len(records):
                    batch = await c.getmany(timeout_ms=500)
                    out += [codec.decode(m.value)[1] for msgs in batch.values() for m in msgs]
        finally:
            await c.stop()
        return out

    aio = asyncio.run(with_aiokafka())
    assert sorted(r["seq"] for r in aio) == [r["seq"] for r in records]
    assert {r["hits"][0]["dev"] for r in aio} == {"veth0"}


def test_influx_point_read_back_with_flux(stack: StackInfo) -> None:
    from influxdb_client import InfluxDBClient, Point
    from influxdb_client.client.write_api import SYNCHRONOUS

    run = uuid.uuid4().hex[:8]
    with InfluxDBClient(url=stack.influx_url, token=stack.influx_token, org=stack.influx_org) as client:
        write = client.write_api(write_options=SYNCHRONOUS)
        write.write(stack.influx_bucket, record=Point("lsx_test").tag("run", run)
                    .field("p99_us", 123.5).field("count", 7))
        write.close()
        flux = (f'from(bucket: "{stack.influx_bucket}") |> range(start: -5m) '
                f'|> filter(fn: (r) => r._measurement == "lsx_test" and r.run == "{run}")')
        rows = {r.get_field(): r.get_value() for t in client.query_api().query(flux) for r in t.records}
    assert rows == {"p99_us": 123.5, "count": 7}


@pytest.mark.parametrize("bad", [b"not avro", b"\xc3\x01" + bytes(8) + b"x"])
def test_undecodable_kafka_value_raises_typed(bad: bytes) -> None:
    with pytest.raises(codec.DecodeError):
        codec.decode(bad)


def test_partition_of_matches_librdkafka(stack: StackInfo) -> None:
    """Agents put several flows in one message, sent to kafka.partition_of(flow id): it must
    be the partition librdkafka itself gives a message keyed by that flow id."""
    from latscope import kafka

    topic = f"lsxt{os.environ['LSX_RUN_ID']}-part-{uuid.uuid4().hex[:8]}"
    kafka.ensure_topics(stack.kafka_bootstrap, {topic: (5, {})})
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    got: list[tuple[bytes, int]] = []
    for i in range(300):
        key = flow_id({**FLOW, "proto": "tcp", "sport": 30000 + i}).encode()
        producer.produce(topic, value=b"x", key=key,
                         on_delivery=lambda err, msg: got.append((msg.key(), msg.partition())))
    assert producer.flush(15) == 0
    assert len(got) == 300 and len({p for _, p in got}) == 5
    assert all(kafka.partition_of(k, 5) == p for k, p in got)


def test_group_lag_is_what_the_group_has_not_committed(stack: StackInfo) -> None:
    """Lag counted by hand: 3 partitions, 40 messages each, a group that committed 25 of one
    and 10 of another (the third: nothing committed, so all 40 count), on a second topic
    nothing; a topic that does not exist is left out."""
    from latscope import kafka

    run = os.environ["LSX_RUN_ID"]
    a, b = (f"lsxt{run}-lag{x}-{uuid.uuid4().hex[:8]}" for x in "ab")
    kafka.ensure_topics(stack.kafka_bootstrap, {a: (3, {}), b: (1, {})})
    producer = Producer({"bootstrap.servers": stack.kafka_bootstrap})
    for p in range(3):
        for _ in range(40):
            producer.produce(a, value=b"x", partition=p)
    producer.produce(b, value=b"y", partition=0)
    assert producer.flush(15) == 0
    group = f"lsxt{run}-lag-{uuid.uuid4().hex[:8]}"
    c = Consumer({"bootstrap.servers": stack.kafka_bootstrap, "group.id": group,
                  "enable.auto.commit": False})
    try:
        c.commit(offsets=[TopicPartition(a, 0, 25), TopicPartition(a, 1, 10),
                          TopicPartition(b, 0, 1)], asynchronous=False)
    finally:
        c.close()
    lag = kafka.group_lag(stack.kafka_bootstrap, group, [a, b, f"{a}-none"])
    assert lag == {a: 15 + 30 + 40, b: 0}, lag
