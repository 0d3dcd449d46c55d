"""A bounded history of closed windows per statistics series, for the live page's "p99 over
time": the pipeline keeps only the newest closed window of each series (``last_closed``),
so the web layer samples it on a timer and remembers what it has not seen yet."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from latscope.stats.sketch import Sketch

KEEP = 900   # windows per series (15 min of 1 s windows)


def _us(ns: float) -> float | None:
    return None if math.isnan(ns) or math.isinf(ns) else round(ns / 1000, 3)


class WindowHistory:
    """flow -> series (segment name) -> [window start ms, count, p50 µs, p99 µs] rows."""

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._rows: dict[str, dict[str, deque]] = {}
        self._seen: dict[str, int] = {}   # series key -> newest window start taken

    def take(self, last_closed: Mapping[str, Mapping[str, Any]]) -> int:
        """Remember every series' newest closed window not taken yet; returns how many."""
        n = 0
        for key, win in list(last_closed.items()):
            if win["w"] <= self._seen.get(key, -1):
                continue
            self._seen[key] = win["w"]
            s = Sketch.of(win["s"]).summary()
            tags = win["tags"]
            series = self._rows.setdefault(tags["flow"], {})
            rows = series.setdefault(tags["segment"], deque(maxlen=self.keep))
            rows.append([win["w"] // 1_000_000, int(s["count"]), _us(s["p50"]), _us(s["p99"])])
            n += 1
        return n

    def flow(self, name: str) -> dict[str, list]:
        return {seg: sorted(rows) for seg, rows in self._rows.get(name, {}).items()}
