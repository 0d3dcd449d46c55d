"""Each stat series' closed windows by their start, so ``/latscope/flows?since=T`` can merge
exactly the windows starting at or after T (the pipeline's own totals run from the worker's
start or the last reset). Fed by the pipeline as it closes windows.

Memory is bounded: per series the newest ``fine`` windows one by one, older ones merged per
``block_s`` of their start times; at most ``max_entries`` entries in all, the oldest dropped
first. A bound that falls inside a merged block moves past it (``totals`` says where), and
``coverage`` says whether anything from the bound on was dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from latscope.stats.sketch import Sketch

FINE_WINDOWS = 20
BLOCK_S = 60
MAX_ENTRIES = 10_000


@dataclass
class _Entry:
    """Closed windows of one series, merged: their starts lie in [first_ns, last_ns]."""

    first_ns: int
    last_ns: int
    sketch: Sketch


class ClosedWindows:
    def __init__(self, fine: int = FINE_WINDOWS, block_s: float = BLOCK_S,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.fine, self.max_entries = fine, max_entries
        self.block_ns = int(block_s * 1e9)
        self._series: dict[tuple, deque[_Entry]] = {}   # oldest first; the last `fine` fine
        self._n = 0
        self.forgotten_before_ns = 0   # windows starting before this may be gone

    def add(self, key: tuple, start_ns: int, sketch: Sketch) -> None:
        """A closed window of series ``key`` (its sketch is not changed, nor kept changed)."""
        entries = self._series.setdefault(key, deque())
        entries.append(_Entry(start_ns, start_ns, sketch))
        self._n += 1
        if len(entries) > self.fine:   # the oldest fine one joins the block before it, or starts one
            old = entries[-self.fine - 1]
            prev = entries[-self.fine - 2] if len(entries) > self.fine + 1 else None
            if prev is not None and prev.first_ns // self.block_ns == old.first_ns // self.block_ns:
                prev.sketch.merge(old.sketch)
                prev.last_ns = old.last_ns
                del entries[-self.fine - 1]
                self._n -= 1
            else:                      # a block of its own sketch: the window's stays as it was
                own = Sketch(accuracy=old.sketch.accuracy)
                own.merge(old.sketch)
                old.sketch = own
        if self._n > self.max_entries:
            self._drop(self._n - self.max_entries * 9 // 10)

    def _drop(self, n: int) -> None:
        """Drop the ``n`` oldest entries of all series (by the start of their newest window)."""
        oldest = sorted((e.last_ns, key) for key, es in self._series.items() for e in es)[:n]
        for last_ns, key in oldest:
            entries = self._series[key]
            entries.popleft()
            self._n -= 1
            self.forgotten_before_ns = max(self.forgotten_before_ns, last_ns + 1)
            if not entries:
                del self._series[key]

    def totals(self, since_ns: int) -> tuple[dict[tuple, Sketch], int]:
        """Per series: its windows starting at or after the bound, merged; and the bound,
        moved past any merged block it falls inside (in any series)."""
        bound = since_ns
        while True:
            split = [e.last_ns for es in self._series.values() for e in es
                     if e.first_ns < bound <= e.last_ns]
            if not split:
                break
            bound = max(split) + 1
        out: dict[tuple, Sketch] = {}
        for key, es in self._series.items():
            for e in es:
                if e.first_ns >= bound:
                    total = out.get(key)
                    if total is None:
                        total = out[key] = Sketch(accuracy=e.sketch.accuracy)
                    total.merge(e.sketch)
        return out, bound

    def coverage(self, since_ns: int) -> dict[str, Any]:
        """Whether ``totals(since_ns)`` holds every window closed since then."""
        oldest = min((es[0].first_ns for es in self._series.values()), default=None)
        return {"complete": since_ns >= self.forgotten_before_ns,
                "kept_from_s": None if oldest is None else round(oldest / 1e9, 3)}
