"""What the stream worker needs of a statistics sink. In production that is InfluxDB
(``latscope.sinks.influx_writer.InfluxSink``); the worker never imports it: the process
entry (stream/cli.py) makes the sink and hands it over.

Writes are queued and sent in the background. Each write takes the next place in the sink's
queue (``mark()`` is the latest); ``settled()`` is the place up to which every write has
been acknowledged or counted as failed. The commit barrier (stream/outputs.py) sends a
closed window's tombstone, and lets input offsets be committed, only once what came of
them is settled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from latscope.stats.sketch import Sketch

# (partition, breakdown, flow name, wall ns): what Windows.collect takes, too
Sample = tuple[int, Mapping[str, Any], str, int]
# (tags, sketch, window start ns, the segment's position on the path)
Window = tuple[Mapping[str, str], Sketch, int, int]


class SinkCounters(Protocol):
    def as_dict(self) -> dict[str, int]: ...


class StatsSink(Protocol):
    counters: SinkCounters   # in the worker's counters as influx_<name>
    freshness: Sketch        # sample wall time -> acknowledged write, ns

    def write_samples(self, samples: Sequence[Sample]) -> None: ...

    def write_windows(self, windows: Sequence[Window]) -> None: ...

    def write_counters(self, worker: str, counters: Mapping[str, int], now_ns: int) -> None: ...

    def write_flow_stats(self, record: Mapping[str, Any], flow: str) -> None:
        """One FlowStats record (stream/flow_stats.py) under the flow's window name."""
        ...

    def mark(self) -> int:
        """The place of the latest write in the queue."""
        ...

    def settled(self) -> int:
        """Every write up to this place is acknowledged or counted as failed."""
        ...

    def send_now(self) -> None:
        """Send what is queued without waiting for the next flush interval."""
        ...

    def wait_settled(self, mark: int, timeout_s: float) -> bool:
        """Block until ``settled() >= mark`` or the timeout; whether it is."""
        ...

    def close(self) -> None: ...
