"""``/latscope/flows?since=``'s memory of closed windows (stream/closed_windows.py), fed as
the pipeline feeds it when it closes windows. Counts and bounds are worked out by hand
from the windows given."""

from __future__ import annotations

from latscope.stats.sketch import Sketch
from latscope.stream.closed_windows import ClosedWindows

S = 1_000_000_000
KEY = ("h1", "c1", "f", "end_to_end")
OTHER = ("h1", "c1", "g", "end_to_end")


def _window(start_s: int, n: int) -> Sketch:
    sk = Sketch()
    sk.add_all([1000.0 * start_s * (i + 1) for i in range(n)])
    return sk


def _count(cw: ClosedWindows, since_s: float, key: tuple = KEY) -> int:
    sk = cw.totals(int(since_s * S))[0].get(key)
    return 0 if sk is None else sk.count


def test_totals_from_a_window_start() -> None:
    cw = ClosedWindows()
    for start, n in ((10, 3), (11, 5), (12, 2)):
        cw.add(KEY, start * S, _window(start, n))
    # from 0 or 10: all 10; from inside window 10 (10.5) or from 11: 5 + 2; from 12: 2
    assert [_count(cw, t) for t in (0, 10, 10.5, 11, 12, 12.001)] == [10, 10, 7, 7, 2, 0]
    assert cw.coverage(0) == {"complete": True, "kept_from_s": 10.0}


def test_older_windows_merge_per_block_and_a_bound_inside_one_moves_past_it() -> None:
    """fine=2, blocks of 10 s: windows 10..25 s (one sample each, 16 in all). The newest two
    (24, 25) stay one by one; 10..19 merge into one block, 20..23 into another."""
    cw = ClosedWindows(fine=2, block_s=10)
    kept = []
    for start in range(10, 26):
        sk = _window(start, 1)
        kept.append((sk, sk.count))
        cw.add(KEY, start * S, sk)
    assert [_count(cw, t) for t in (0, 10, 20, 24, 25)] == [16, 16, 6, 2, 1]
    out, bound = cw.totals(15 * S)        # inside the 10..19 block: from 20 on
    assert bound == 19 * S + 1 and out[KEY].count == 6
    out, bound = cw.totals(22 * S)        # inside 20..23: from 24 on
    assert bound == 23 * S + 1 and out[KEY].count == 2
    # a window's own sketch never takes the others' samples
    assert all(sk.count == n for sk, n in kept)


def test_the_oldest_entries_go_first_and_coverage_says_so() -> None:
    cw = ClosedWindows(fine=100, max_entries=10)
    for start in range(10, 16):
        cw.add(KEY, start * S, _window(start, 1))
        cw.add(OTHER, start * S, _window(start, 2))
    # the 11th entry (K15) overflows: down to 9, the oldest two (10 s of both) gone; O15
    # makes 10 again, within the bound
    assert _count(cw, 0) == 5 and _count(cw, 0, OTHER) == 10
    cov = cw.coverage(10 * S)
    assert cov["complete"] is False and cw.forgotten_before_ns == 10 * S + 1
    assert cw.coverage(11 * S) == {"complete": True, "kept_from_s": 11.0}
    assert _count(cw, 12) == 4 and _count(cw, 12, OTHER) == 8
