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

The same arrival times bound what is still to come (``event_watermark``): the agents put a
byte's records in Kafka within the join window of its first point (agent.join_window_ms),
so a sample not closed yet began at most a join window before its first record arrived,
and one not read yet at most a join window before its partition's newest arrival. The
statistics windows close on that bound, so no sample is left out of them as late because
it waited for its join window or the worker lagged behind.

A resent copy of a byte (the agent's ``retrans`` flag) is a sample of its own: it is never
joined with an unflagged copy's records (``sample_key``).

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

from latscope.schemas.sampling import JOIN_LATENESS_S, JOIN_WINDOW_S

# Closed sample keys remembered for stragglers: at most this many (the oldest forgotten
# first, counted), whatever the window.
CLOSED_MAX = 200_000

# state dict keys (short: they go to the changelog for every unmatched sample)
#   k: sample key   p: partition   t: arrival time (Kafka timestamp) of the first record
#   s: wall time the worker first saw it   ev: records


@dataclass(frozen=True)
class JoinPolicy:
    window_s: float = JOIN_WINDOW_S
    lateness_s: float = JOIN_LATENESS_S

    @property
    def close_after_s(self) -> float:
        return self.window_s + self.lateness_s


def sample_key(event: Mapping) -> str:
    """One sample per copy kind of a sampled byte: resent copies ("#r") apart."""
    key = f"{event['flow_id']}#{event['seq']}"
    return key + "#r" if event.get("retrans") else key


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
    resent: int = 0          # records of resent copies (joined apart from unflagged ones)
    repeated: int = 0        # records already in their pending sample, dropped

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@dataclass
class Joiner:
    """In-memory half of the join; the caller owns the durable table of unmatched samples."""

    policy: JoinPolicy
    path_of: Callable[[Mapping], Sequence[str] | None]    # a record -> hosts on its path
    on_late: Callable[[Mapping], None] | None = None      # a record dropped as late
    counters: JoinCounters = field(default_factory=JoinCounters)
    _closed: set[str] = field(default_factory=set)
    _closed_at: deque[tuple[float, str]] = field(default_factory=deque)
    watermark: dict[int, float] = field(default_factory=dict)    # partition -> newest arrival
    # Partitions with records the worker has not read yet (the caller knows its consumer's
    # offsets): never "quiet", whatever the wall clock says.
    backlogged: set[int] = field(default_factory=set)
    _advanced: dict[int, float] = field(default_factory=dict)    # partition -> wall time it moved
    _oldest: dict[int, float] = field(default_factory=dict)   # partition -> oldest pending "t"

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
            if ev.get("retrans"):
                key += "#r"
                self.counters.resent += 1
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
                        if self.on_late is not None:
                            self.on_late(ev)
                        continue
                    state = {"k": key, "p": partition, "t": ts, "s": now, "ev": []}
            evs = state["ev"]
            if ev in evs:   # read again after a restart: the state restored holds it already
                self.counters.repeated += 1
                continue
            evs.append(ev)   # decoded for this batch alone: no copy needed
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
        oldest: dict[int, float] = {}
        for state in list(table.values()):
            if self.is_due(state, now):
                self._close(state, now, done, by_window=True)
            elif state["t"] < oldest.get(state["p"], math.inf):
                oldest[state["p"]] = state["t"]
        self._oldest = oldest
        self._forget(now)
        done.sort(key=lambda st: st["t"])   # the oldest first: it may teach the others a path
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

    def close_ready(self, table: Mapping[str, dict], now: float) -> list[dict]:
        """Pending samples whose every host has reported, now that a path is known they
        were waiting for without one (the caller deletes them from the table)."""
        done: list[dict] = []
        path_of = self.path_of
        for state in list(table.values()):
            if is_ready(state, path_of(state["ev"][0])):
                self._close(state, now, done, by_window=False)
        return done

    def event_watermark(self, now: float) -> float:
        """Wall time (s) no sample still to close on this worker's partitions began before,
        as of the last ``expire``: per partition, the oldest open sample's first arrival or
        the newest arrival read (a partition read to its end: at least now less a window,
        as ``is_due`` takes it to be quiet), less the join window; the least of them."""
        after = self.policy.close_after_s
        low = now - after
        for p in {*self.watermark, *self.backlogged, *self._oldest}:
            front = self.watermark.get(p, -math.inf)
            if p not in self.backlogged:
                front = max(front, now - after)
            low = min(low, front, self._oldest.get(p, math.inf))
        return low - after

    def keep_partitions(self, owned: set[int]) -> None:
        """Forget the arrival state of partitions another worker now owns."""
        for d in (self.watermark, self._advanced, self._oldest):
            for p in [p for p in d if p not in owned]:
                del d[p]

    def on_path(self, state: dict) -> bool:
        """A sample closed by its window, the same moment a path it lacked was learned
        (an earlier sample of the same tick taught it): with every host of that path it
        counts as closed on its path. True: it did."""
        if state.pop("bw", False) and is_ready(state, self.path_of(state["ev"][0])):
            self.counters.by_window -= 1
            return True
        return False

    def _close(self, state: dict, now: float, done: list[dict], *, by_window: bool) -> None:
        self.counters.joined += 1
        self.counters.by_window += by_window
        if by_window:
            state["bw"] = True    # read by on_path; a closed state is never written again
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
