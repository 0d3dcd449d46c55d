"""Each layer-events partition taken in offset order, every offset once, from where the
group committed; and the offsets to commit, from what the commit barrier settled.

Why: when partitions are assigned, Faust resumes them before it seeks them to the committed
offsets, and resumes the flow after (faust/tables/recovery.py). What was fetched in between
still reaches the stream: some records are processed, then fetched again after the seek
(processed twice), some are cleared from the queues when the flow resumes and the re-fetched
copy is dropped because the fetcher already delivered a later offset (never processed),
and the fetcher's gap bookkeeping then counts offsets as done that nothing processed (a
commit past them), or counts them twice (commits that advance one offset at a time). So
the worker decides itself: a record is taken only at its partition's next offset; an
earlier one is skipped (counted), a later one means records were lost on the way, and the
partition is sought back to the next offset (counted); Faust commits, per partition, the
offset after the last record whose outputs settled, and nothing from its own bookkeeping.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

RESEEK_EVERY_S = 1.0   # a partition sought back again at most this often (records in flight)
HOLE_AFTER = 5         # sought back this often to one offset, still later ones: a hole in the log


@dataclass
class OrderCounters:
    input_repeated: int = 0   # records delivered again below their partition's next offset
    input_reseeks: int = 0    # partitions sought back: records before the one delivered missing
    input_holes: int = 0      # offsets missing from the log itself (never delivered), skipped

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class InputOrder:
    """``next``: partition -> next offset to take (known once the partition's start is);
    ``settled``: partition -> offset after the last record whose outputs settled."""

    next: dict[int, int] = field(default_factory=dict)
    settled: dict[int, int] = field(default_factory=dict)
    counters: OrderCounters = field(default_factory=OrderCounters)
    _sought: dict[int, tuple[int, float, int]] = field(default_factory=dict)  # p -> (offset, at, n)

    def unknown(self, events: Sequence[Any]) -> set[int]:
        """Partitions in ``events`` whose start is not known yet."""
        return {e.message.partition for e in events} - self.next.keys()

    def start(self, partition: int, offset: int) -> None:
        self.next[partition] = offset

    def reset(self) -> None:
        """Partitions (re)assigned: each starts again where the group committed, and what
        settled before is the group's committed offset already or no longer ours to commit."""
        self.next.clear()
        self.settled.clear()
        self._sought.clear()

    def split(self, events: Sequence[Any], now: float) -> tuple[list[Any], dict[int, int]]:
        """(the events to take, in order; partition -> offset to seek it back to). Events
        after a partition's gap wait for the records before them (they come again)."""
        take: list[Any] = []
        seek: dict[int, int] = {}
        stalled: set[int] = set()
        nxt, c = self.next, self.counters
        for e in events:
            p, offset = e.message.partition, e.message.offset
            if p in stalled:
                continue
            want = nxt[p]
            if offset < want:
                c.input_repeated += 1
                continue
            if offset > want:
                if self._hole(p, want, now):
                    c.input_holes += offset - want
                else:
                    stalled.add(p)
                    if self._reseek(p, want, now):
                        seek[p] = want
                    continue
            nxt[p] = offset + 1
            take.append(e)
        return take, seek

    def stalled(self, now: float) -> dict[int, int]:
        """Partitions still waiting at the offset they were sought back to, a while after:
        sought again (records fetched before the seek can make the fetcher drop the copies
        fetched after it, and a partition at its end delivers nothing that would tell)."""
        out = {}
        for p, (offset, _, _) in list(self._sought.items()):
            if self.next.get(p) != offset:
                del self._sought[p]       # moved on
            elif self._reseek(p, offset, now):
                out[p] = offset
        return out

    def _reseek(self, p: int, want: int, now: float) -> bool:
        offset, at, n = self._sought.get(p, (-1, 0.0, 0))
        if offset == want and now - at < RESEEK_EVERY_S:
            return False
        self._sought[p] = (want, now, n + 1 if offset == want else 1)
        self.counters.input_reseeks += 1
        return True

    def _hole(self, p: int, want: int, now: float) -> bool:
        """Sought back to ``want`` often enough, and a later offset still comes first."""
        offset, at, n = self._sought.get(p, (-1, 0.0, 0))
        return offset == want and n >= HOLE_AFTER and now - at >= RESEEK_EVERY_S

    def settle(self, partition: int, offset: int) -> None:
        """A record's outputs settled (records settle in offset order per partition); one
        taken before the partitions were reassigned is not committed by this worker."""
        if partition in self.next and offset >= self.settled.get(partition, 0):
            self.settled[partition] = offset + 1
