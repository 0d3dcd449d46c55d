"""Join the per-host records of one sampled byte (Faust's Stream.join is not implemented).

A sample is identified by ``flow_id#seq``; its host records share a Kafka partition
because the topic is keyed by flow id. A batch is joined in memory first, so a sample whose
records all arrive in one batch never touches the table; what is still unmatched at the
end of a batch is written to the per-partition table once, with its partition, and waits
there for its partners until every expected host has reported or the window (plus allowed
lateness) closes it. Records of a sample that was already closed are counted as late and
dropped (they would otherwise open a second, one-host sample).

The window runs on arrival time (the records' Kafka timestamps: the broker's append time on
the topic as LatScope creates it), measured against each partition's watermark, the newest arrival
the worker has read there. So a worker catching up on a backlog, or busy with one large
batch, does not close samples whose partners are already in the partition but not yet
read, as a wall-clock window would. A partition that goes quiet has no watermark to
advance: once it has been quiet for a whole window, its samples close by wall time.

Everything here is plain data (JSON-able dicts) so the Faust table can hold it and tests
can drive it without a broker.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from operator import itemgetter

# Closed sample keys remembered for stragglers: at most this many (the oldest forgotten
# first, counted), whatever the window.
CLOSED_MAX = 200_000

# state dict keys (short: they go to the changelog for every unmatched sample)
#   k: sample key   p: partition   t: arrival time (Kafka timestamp) of the first record
#   s: wall time the worker first saw it   ev: records


@dataclass(frozen=True)
class JoinPolicy:
    window_s: float = 2.0
    lateness_s: float = 1.0

    @property
    def close_after_s(self) -> float:
        return self.window_s + self.lateness_s


def sample_key(event: Mapping) -> str:
    return f"{event['flow_id']}#{event['seq']}"


def is_ready(state: Mapping, path: Sequence[str] | None) -> bool:
    """Every expected host reported and the last one reached its last point.

    Without a path (no topology) a sample only closes by its window.
    """
    if not path:
        return False
    evs = state["ev"]
    if len(evs) < len(path):     # cheap and usual: not every host has reported yet
        return False
    last = path[-1]
    if not any(e["host"] == last and e.get("complete") for e in evs):
        return False
    hosts = {e["host"] for e in evs}
    return all(h in hosts for h in path)




@dataclass
class JoinCounters:
    records: int = 0
    joined: int = 0          # samples closed (ready or by window)
    by_window: int = 0       # of which closed by the window, not by all hosts reporting
    late: int = 0            # records for an already closed sample, dropped
    evicted: int = 0         # closed early: more samples pending than the bound
    closed_forgotten: int = 0   # closed keys forgotten before their window passed (bound)

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Joiner:
    """In-memory half of the join; the caller owns the durable table of unmatched samples."""

    policy: JoinPolicy
    path_of: Callable[[Mapping], Sequence[str] | None]    # a record -> hosts on its path
    counters: JoinCounters = field(default_factory=JoinCounters)
    _closed: set[str] = field(default_factory=set)
    _closed_at: deque[tuple[float, str]] = field(default_factory=deque)
    watermark: dict[int, float] = field(default_factory=dict)    # partition -> newest arrival
    # Partitions with records the worker has not read yet (the caller knows its consumer's
    # offsets): never "quiet", whatever the wall clock says.
    backlogged: set[int] = field(default_factory=set)
    _advanced: dict[int, float] = field(default_factory=dict)    # partition -> wall time it moved

    def is_due(self, state: Mapping, now: float) -> bool:
        """The window closed on the partition's watermark, or the partition has been
        quiet (read to its end, nothing new) for a window and the sample was seen a window
        ago."""
        after, p = self.policy.close_after_s, state["p"]
        if self.watermark.get(p, -math.inf) >= state["t"] + after:
            return True
        return (p not in self.backlogged and now - self._advanced.get(p, -math.inf) >= after
                and now >= state.get("s", state["t"]) + after)

    def process(self, events: Iterable[tuple[int, float, Mapping]], table: Mapping[str, dict],
                now: float) -> tuple[list[dict], dict[str, tuple[int, dict | None]]]:
        """Join one batch of (partition, arrival time, LayerEvent).

        Returns (closed sample states, table writes ``key → (partition, state or None)``).
        """
        self._forget(now)
        done: list[dict] = []
        touched: dict[str, dict] = {}
        writes: dict[str, tuple[int, dict | None]] = {}
        path_of, closed, wm = self.path_of, self._closed, self.watermark
        n = 0
        for partition, ts, ev in events:
            n += 1
            if ts > wm.get(partition, -math.inf):
                wm[partition] = ts
                self._advanced[partition] = now
            key = f"{ev['flow_id']}#{ev['seq']}"     # sample_key(), inlined: per record
            state = touched.get(key)
            if state is None:
                state = table.get(key)
                if state is not None and self.is_due(state, now):
                    # Stale entry the timer has not reached yet: close it first.
                    self._close(state, now, done, by_window=True)
                    writes[key] = (state["p"], None)
                    state = None
                if state is None:
                    if key in closed:
                        self.counters.late += 1
                        continue
                    state = {"k": key, "p": partition, "t": ts, "s": now, "ev": []}
            state["ev"].append(ev)   # decoded for this batch alone: no copy needed
            if is_ready(state, path_of(ev)):
                touched.pop(key, None)
                self._close(state, now, done, by_window=False)
                if key in table:
                    writes[key] = (state["p"], None)
                else:
                    writes.pop(key, None)
            else:
                touched[key] = state
        for key, state in touched.items():
            writes[key] = (state["p"], state)
        self.counters.records += n
        return done, writes

    def expire(self, table: Mapping[str, dict], now: float) -> list[dict]:
        """Samples whose window closed; the caller deletes them from the table."""
        done: list[dict] = []
        for state in list(table.values()):
            if self.is_due(state, now):
                self._close(state, now, done, by_window=True)
        self._forget(now)
        return done

    def evict_oldest(self, table: Mapping[str, dict], keep: int, now: float) -> list[dict]:
        """More samples pending than the bound: the earliest arrivals close now, down to
        ``keep``; the caller deletes them from the table."""
        done: list[dict] = []
        excess = len(table) - keep
        if excess > 0:
            for state in heapq.nsmallest(excess, table.values(), key=itemgetter("t")):
                self._close(state, now, done, by_window=True)
            self.counters.evicted += len(done)
        return done

    def _close(self, state: dict, now: float, done: list[dict], *, by_window: bool) -> None:
        self.counters.joined += 1
        self.counters.by_window += by_window
        self._closed.add(state["k"])
        self._closed_at.append((now, state["k"]))
        if len(self._closed_at) > CLOSED_MAX:
            self._closed.discard(self._closed_at.popleft()[1])
            self.counters.closed_forgotten += 1
        done.append(state)

    def _forget(self, now: float) -> None:
        # Remember closed keys for one more window: long enough to catch stragglers.
        # (A sequence number repeats only after 4 GiB of one flow: not within a window
        # below ~100 Gbit/s.)
        horizon = now - self.policy.close_after_s
        while self._closed_at and self._closed_at[0][0] < horizon:
            self._closed.discard(self._closed_at.popleft()[1])
