"""The live page's window history: each closed window taken once, in order, bounded."""

from __future__ import annotations

from latscope.stats.sketch import Sketch
from latscope.stream.history import WindowHistory


def _win(flow: str, seg: str, start_ms: int, values: list[float]) -> dict:
    sk = Sketch()
    sk.add_all(values)
    return {"w": start_ms * 1_000_000, "tags": {"flow": flow, "segment": seg}, "s": sk}


def test_each_window_once_in_order() -> None:
    h = WindowHistory()
    assert h.take({"k": _win("f1", "a→b", 1000, [2000.0] * 4)}) == 1
    assert h.take({"k": _win("f1", "a→b", 1000, [2000.0] * 4)}) == 0   # the same window again
    assert h.take({"k": _win("f1", "a→b", 2000, [1000.0, 3000.0])}) == 1
    rows = h.flow("f1")["a→b"]
    assert [r[:2] for r in rows] == [[1000, 4], [2000, 2]]
    assert abs(rows[0][2] - 2.0) < 0.02 and abs(rows[0][3] - 2.0) < 0.02   # µs, 1 % sketch
    assert h.flow("nope") == {}


def test_bounded() -> None:
    h = WindowHistory(keep=3, max_series=10)
    for t in range(5):
        h.take({"k": _win("f1", "a→b", 1000 * t, [1.0])})
    assert [r[0] for r in h.flow("f1")["a→b"]] == [2000, 3000, 4000]
    for i in range(11):   # an 11th series: the quietest ones go
        h.take({f"s{i}": _win(f"g{i}", "x→y", 10_000 + i, [1.0])})
    assert len(h._seen) <= 10 and "f1" not in h._rows and "g10" in h._rows
