"""The stride level: an agent's CPU budget, held without breaking samples across hosts.

An agent's cost grows with the records it publishes, and those grow with the traffic. Each
host may publish at most ``budget`` records/s; when its traffic would make more, sampling
gets sparser, but the same way on every host, or a byte sampled on one host and not on the
next would leave both records incomplete. So the stride is ``size << level``: the sampled
bytes of level k+1 are a subset of level k's (nested sets), and the level is one number
for the whole fleet, which every agent derives from the same inputs at the same time:

- each agent computes the level *it* needs (its Governor: records/s over the last
  RATE_WINDOW_S, scaled back to level 0, against the budget; up at once, down one step after
  DOWN_AFTER_S with room to spare) and publishes it as a demand with an effective time
  LEAD_S ahead (wall clock; the hosts' clocks are synchronised), again every HEARTBEAT_S;
  its first demand waits for its first measured rate, so until then the fleet's demands
  stand, its own previous one included (an agent restarted under load keeps the level
  instead of publishing level 0 and paying seconds of it);
- every agent reads every demand (a compacted topic, keyed by host: producers/stride_sync.py)
  and applies, from each demand's effective time on, the highest level among the demands
  that are fresh (sent within STALE_S: a host that stopped no longer holds the fleet).

Every agent switches at the same instant (up to the clocks' error and how late a demand
arrives, both far below LEAD_S). A byte crossing hosts within that error of the switch may
be sampled on one side only: its records are incomplete and counted as such by the stream
worker; no other sample changes. Raising the level keeps a subset of the bytes, so samples
whose hosts disagree only exist at the boundary. On one host, a byte between the two
strides gets no further hit after a rise; its records are flushed then, incomplete and
counted (Agent.follow_stride).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

RATE_WINDOW_S = 2.0
LEAD_S = 2.0
HEARTBEAT_S = 30.0
STALE_S = 100.0
DOWN_AFTER_S = 20.0
DOWN_ROOM = 0.5          # a level down must need at most this share of the budget
SETTLE_S = 1.5           # after a switch: the agent's hold, and then some
MAX_STRIDE = 1 << 31     # strides stay below 2^32 (sequence space) with room for ranges


def max_level(size: int) -> int:
    """The highest level whose stride (size << level) stays below MAX_STRIDE."""
    return max(0, (MAX_STRIDE // size).bit_length() - 1)


@dataclass(frozen=True)
class Demand:
    """The level one host needs, from ``effective_ns`` on (wall clock, ns since the epoch)."""

    host: str
    level: int
    effective_ns: int
    sent_ns: int
    rate: float = 0.0        # its records/s when it asked (for status and tests)
    budget: int = 0


class Schedule:
    """Every host's newest demand, and the level in effect at any instant. A host's demand
    holds until the one that replaced it takes effect: a heartbeat, or a restarted agent's
    first demand, is effective LEAD_S after it is sent, and the fleet must not fall back
    to a lower level for those seconds."""

    def __init__(self, stale_s: float = STALE_S) -> None:
        self.demands: dict[str, Demand] = {}
        self._before: dict[str, Demand] = {}   # the demand each newest one replaced
        self._stale_ns = int(stale_s * 1e9)

    def add(self, d: Demand) -> None:
        old = self.demands.get(d.host)
        if old is None or d.sent_ns >= old.sent_ns:
            self.demands[d.host] = d
            if old is not None:
                self._before[d.host] = old

    def remove(self, host: str) -> None:
        self.demands.pop(host, None)
        self._before.pop(host, None)

    def level_at(self, t_ns: int) -> int:
        """The highest level among demands in effect at t_ns and fresh then; 0 without.
        A host's newest demand is in effect from its effective time; until then, the one
        it replaced (if that one is in effect and fresh)."""
        out = 0
        for host, d in self.demands.items():
            if d.effective_ns > t_ns:
                d = self._before.get(host, d)
            if d.effective_ns <= t_ns < d.sent_ns + self._stale_ns:
                out = max(out, d.level)
        return out


class Governor:
    """This host's demand: the lowest level at which its records/s fit the budget."""

    def __init__(self, host: str, budget: int, size: int) -> None:
        if budget <= 0:
            raise ValueError(f"stride budget must be > 0 records/s, got {budget}")
        self.host, self.budget = host, budget
        self.top = max_level(size)
        self.level = 0                 # the demand as last published
        self._seen: deque[tuple[float, int]] = deque()   # (s, records) under _applied
        self._applied = 0
        self._quiet_until = 0.0
        self._room_since: float | None = None
        self._sent_at: float | None = None
        self._measured = False         # a rate was measured: demands may go out
        self.rate = 0.0

    def observe(self, now_s: float, records: int, applied: int) -> bool:
        """Take the record counter at ``now_s`` (monotonic) under the level applied now;
        True when the demand changed or is due again (publish ``demand()``). The rate is
        measured under one level only: after a switch, records of bytes sampled before it
        still come out for a hold, so the window starts again SETTLE_S later."""
        if applied != self._applied:
            self._applied, self._quiet_until = applied, now_s + SETTLE_S
            self._seen.clear()
            self._room_since = None
        if now_s < self._quiet_until:
            return self._due(now_s)
        seen = self._seen
        seen.append((now_s, records))
        while len(seen) > 2 and now_s - seen[1][0] >= RATE_WINDOW_S:
            seen.popleft()
        t0, r0 = seen[0]
        if now_s - t0 < RATE_WINDOW_S / 2:
            return self._due(now_s)
        self.rate = (records - r0) / (now_s - t0)
        self._measured = True
        base = self.rate * (1 << applied)      # what level 0 would publish
        need = 0 if base <= self.budget else min(self.top, math.ceil(math.log2(base / self.budget)))
        changed = False
        if need > self.level:
            self.level, self._room_since, changed = need, None, True
        elif need < self.level and base / (1 << (self.level - 1)) <= DOWN_ROOM * self.budget:
            if self._room_since is None:
                self._room_since = now_s
            elif now_s - self._room_since >= DOWN_AFTER_S:
                self.level, self._room_since, changed = self.level - 1, None, True
        else:
            self._room_since = None
        return changed or self._due(now_s)

    @property
    def published(self) -> bool:
        """Whether this governor has made a demand yet."""
        return self._sent_at is not None

    def _due(self, now_s: float) -> bool:
        """A demand goes out once a rate was measured: first, then every HEARTBEAT_S."""
        return self._measured and (self._sent_at is None
                                   or now_s - self._sent_at >= HEARTBEAT_S)

    def demand(self, now_s: float, wall_ns: int) -> Demand:
        """The demand to publish now (effective LEAD_S ahead)."""
        self._sent_at = now_s
        return Demand(self.host, self.level, wall_ns + int(LEAD_S * 1e9), wall_ns,
                      round(self.rate, 1), self.budget)
