"""The commit barrier on the real broker and the real InfluxDB, without Faust: what it sends
to the changelog and which input messages it acknowledges, and when."""

from __future__ import annotations

import pytest

from latscope.procs import free_port
from latscope.sinks.influx_writer import InfluxSink, delete_run
from latscope.sinks.settings import InfluxSettings
from latscope.stats.sketch import Sketch
from latscope.stream.outputs import Outputs

pytestmark = pytest.mark.stack

TAGS = {"src_host": "h1", "dst_host": "c1", "flow": "f9", "segment": "h1→c1", "layer": "wire",
        "device": ""}


def window() -> tuple:
    sk = Sketch()
    sk.add_all([1000, 2000])
    return TAGS, sk, 10**18, 0


class Sent:
    def __init__(self) -> None:
        self.changelog: list = []
        self.acked: list = []

    def outputs(self, stack, topic: str, sink: InfluxSink | None, wait_s: float = 2.0) -> Outputs:
        out = Outputs(stack.kafka_bootstrap, sink, self.changelog.append,
                      lambda owner, batch: self.acked.extend(batch), wait_s=wait_s)
        for i in range(50):
            out.publish(topic, b"k", b"v%d" % i)
        return out


def test_an_epoch_settles_once_kafka_and_influxdb_have_it(stack, topic_name, run_tag) -> None:
    influx = InfluxSettings(stack.influx_url, stack.influx_org, stack.influx_bucket,
                            stack.influx_token, tags={"run": run_tag}, flush_interval_ms=60_000)
    sink = InfluxSink(influx)
    sent = Sent()
    out = sent.outputs(stack, topic_name, sink)
    try:
        out.hold("stream", ["m1", "m2"])
        sink.write_windows([window()])
        tombstone = ("stats", 0, "w1", None)
        out.barrier([tombstone])
        # Kafka is flushed at the barrier; the sink is asked to send now, not waited for.
        assert out.counters.commits_held_back == 0 and len(out.producer) == 0
        if sent.acked:   # InfluxDB already answered: the epoch settled in the same barrier
            assert sent.changelog == [tombstone] and sent.acked == ["m1", "m2"]
        assert sink.wait_settled(sink.mark(), 10) and sink.counters.lines_written == 1
        out.hold("stream", ["m3"])
        assert out.barrier([]) is True
        assert sent.changelog == [tombstone] and sent.acked == ["m1", "m2", "m3"]
        assert out.counters.changelog_records == 1
    finally:
        out.close()
        delete_run(influx, run_tag)


def test_unacknowledged_windows_keep_their_tombstones_until_counted_lost(stack, topic_name) -> None:
    """InfluxDB does not answer: nothing moves past the deadline; once the sink gives up and
    counts the window lost, its tombstone goes (the window is gone, and counted)."""
    nowhere = InfluxSettings(f"http://127.0.0.1:{free_port()}", "o", "b", "t",
                             max_retries=1, retry_interval_s=2.0)
    sink = InfluxSink(nowhere)
    sent = Sent()
    out = sent.outputs(stack, topic_name, sink, wait_s=0.3)
    try:
        out.hold("stream", ["m1"])
        sink.write_windows([window()])
        assert out.barrier([("stats", 0, "w1", None)], drain=True) is False
        assert (sent.changelog, sent.acked) == ([], [])
        assert out.counters.commits_held_back == 1 and out.gauges() == {
            "epochs_unsettled": 1, "messages_held": 1}
        assert sink.wait_settled(sink.mark(), 30)
        assert sink.counters.windows_failed == 1 and sink.counters.lines_written == 0
        assert out.barrier([]) is True
        assert sent.changelog == [("stats", 0, "w1", None)] and sent.acked == ["m1"]
    finally:
        out.close()
