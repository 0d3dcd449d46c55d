"""What a fault cost, from counts kept outside the system under test: the agents' own
counters, the broker's topic contents, InfluxDB's points."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Records:
    """Every record the agents made, and where it went. ``lost`` is what no count explains:
    made, not counted as failed by the agent, and not joined by the worker."""

    offered: int          # records the agents' grouping made (their own counter)
    failed: int           # counted by the agents as not delivered
    delivered: int        # acknowledged by the broker (agents' delivery reports)
    in_topic: int         # on the broker, read back
    consumed: int         # read by the worker
    late: int             # read by the worker after their sample had closed
    samples: int          # samples the worker closed (complete + incomplete)
    complete: int

    @property
    def joined(self) -> int:
        return self.consumed - self.late

    @property
    def lost(self) -> int:
        return max(0, self.offered - self.failed - self.joined)

    @property
    def miscounted(self) -> int:
        """Records the counts disagree on: on the broker though not acknowledged to the
        agents, or counted failed and joined all the same."""
        return abs(self.in_topic - self.delivered) + max(0, self.failed + self.joined
                                                         - self.offered)

    @classmethod
    def of(cls, agents: dict[str, dict], worker: dict, in_topic: int) -> Records:
        def total(key: str) -> int:
            return sum(a["counters"][key] for a in agents.values())

        return cls(offered=total("records"), failed=total("failed_deliveries"),
                   delivered=total("published"), in_topic=in_topic,
                   consumed=worker["records"], late=worker["join_late"],
                   samples=worker["complete"] + worker["incomplete"],
                   complete=worker["complete"])
