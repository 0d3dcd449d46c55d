"""Prometheus text endpoint for the agent's counters (read live from Agent.status())."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

GAUGES = {"open_groups", "waiting"}
HELP = {
    "hits": "point hits (byte ranges) read from the ring buffer",
    "sampled_hits": "point hits of sampled bytes after expanding ranges",
    "idle_waits": "long waits of the agent's loop with no sampled byte open",
    "idle_woken": "long waits the probes ended with a new record",
    "samples": "sampled bytes started on this host",
    "records": "records produced by grouping",
    "published": "records acknowledged by Kafka",
    "produced": "records handed to the Kafka producer",
    "waiting": "records waiting in the publisher for their partition's message to be due",
    "messages": "Kafka messages queued (one LayerEventBatch per partition when due)",
    "failed_deliveries": "records Kafka did not acknowledge",
    "buffer_waits": "times the producer queue was full and the agent waited",
    "ringbuf_drops": "events lost because the ring buffer was full",
    "kernel_hits": "events the probes emitted",
    "unparsed": "packets whose headers the probes could not read",
    "rate_capped": "sampled bytes dropped by the per-host rate cap",
    "retrans": "resent sampled bytes (each counted once, whatever its copies)",
    "retrans_dropped": "records of resent bytes dropped (filter_retrans)",
    "evicted": "groups flushed early because too many were open",
    "late_socket": "socket hits of bytes already published (waited past the hold), dropped",
    "gaps": "records that reached their last point lacking a point on the way (incomplete)",
    "overrun": "records published while the ring buffer had just lost hits (all flagged incomplete)",
    "restrided": "records of TCP bytes flushed incomplete when the stride level rose past them",
    "resent_marked": "resent segments the sender's tcp_tx marked for every host",
    "mark_failed": "resent segments the sender could not mark (no option room or storage)",
    "open_groups": "sampled bytes waiting for more hits",
    "flow_full": "packets whose flow counters were not kept: the flow_stats map was full",
    "drop_nohdr": "dropped packets not counted to a flow: no IP header could be found",
}


class _Collector:
    def __init__(self, status: Callable[[], dict]) -> None:
        self._status = status

    def collect(self) -> Iterator[Metric]:
        st = self._status()
        labels = {"host": st["host"]}
        for name, value in st["counters"].items():
            fam: Metric
            if name in GAUGES:
                fam = GaugeMetricFamily(f"latscope_agent_{name}", HELP.get(name, name),
                                        labels=list(labels))
            else:
                fam = CounterMetricFamily(f"latscope_agent_{name}", HELP.get(name, name),
                                          labels=list(labels))
            fam.add_metric(list(labels.values()), value)
            yield fam


def serve(port: int, status: Callable[[], dict], addr: str = "127.0.0.1") -> object:
    """Serve /metrics on addr:port in a daemon thread; returns the server (call .shutdown())."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(status))
    server, _thread = start_http_server(port, addr=addr, registry=registry)
    return server
