"""A bounded history of closed windows per statistics series, for the live page's "p99 over
time": the pipeline keeps only the newest closed window of each series (``last_closed``),
so the web layer samples it on a timer and remembers what it has not seen yet."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from latscope.stats.sketch import Sketch

KEEP = 900          # windows per series (15 min of 1 s windows)
MAX_SERIES = 4000   # series remembered; past this the longest-quiet tenth is forgotten


def _us(ns: float) -> float | None:
    return None if math.isnan(ns) or math.isinf(ns) else round(ns / 1000, 3)


class WindowHistory:
    """flow -> series (segment name) -> [window start ms, count, p50 µs, p99 µs] rows."""

    def __init__(self, keep: int = KEEP, max_series: int = MAX_SERIES) -> None:
        self.keep, self.max_series = keep, max_series
        self._rows: dict[str, dict[str, deque]] = {}
        # series key -> (newest window start taken, flow, segment)
        self._seen: dict[str, tuple[int, str, str]] = {}

    def take(self, last_closed: Mapping[str, Mapping[str, Any]]) -> int:
        """Remember every series' newest closed window not taken yet; returns how many."""
        n = 0
        for key, win in list(last_closed.items()):
            seen = self._seen.get(key)
            if seen is not None and win["w"] <= seen[0]:
                continue
            tags = win["tags"]
            self._seen[key] = (win["w"], tags["flow"], tags["segment"])
            s = Sketch.of(win["s"]).summary()
            series = self._rows.setdefault(tags["flow"], {})
            rows = series.setdefault(tags["segment"], deque(maxlen=self.keep))
            rows.append([win["w"] // 1_000_000, int(s["count"]), _us(s["p50"]), _us(s["p99"])])
            n += 1
        if len(self._seen) > self.max_series:
            self._forget(len(self._seen) - self.max_series * 9 // 10)
        return n

    def _forget(self, n: int) -> None:
        """Drop the ``n`` series whose newest window is oldest (flows that went quiet)."""
        for key, (_, flow, segment) in sorted(self._seen.items(), key=lambda kv: kv[1][0])[:n]:
            del self._seen[key]
            series = self._rows.get(flow, {})
            series.pop(segment, None)
            if not series:
                self._rows.pop(flow, None)

    def flow(self, name: str) -> dict[str, list]:
        return {seg: sorted(rows) for seg, rows in self._rows.get(name, {}).items()}
