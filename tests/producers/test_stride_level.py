"""The stride level's rules (producers/stride_level.py) and the door of its topic
(producers/stride_sync.py), against figures worked out by hand here. No kernel, no broker:
tests/producers/test_stride_budget.py runs the real thing."""

from __future__ import annotations

import pytest

from latscope.kafka import KafkaSettings
from latscope.producers import stride_level as sl
from latscope.producers.publish import agent_producer
from latscope.producers.stride_level import Demand, Governor, Schedule, max_level
from latscope.producers.stride_sync import StrideLoop
from latscope.schemas import codec

S = 1_000_000_000


def test_max_level_keeps_the_stride_below_2_31() -> None:
    # 72400 << 14 = 1 186 201 600 < 2^31 = 2 147 483 648 < 72400 << 15 = 2 372 403 200
    assert max_level(72400) == 14
    assert max_level(1448) == 20        # 1448 << 20 = 1 518 338 048; << 21 > 2^31
    assert max_level(1 << 31) == 0


def test_schedule_applies_the_highest_fresh_demand_from_its_effective_time() -> None:
    sch = Schedule(stale_s=100)
    sch.add(Demand("h1", 2, effective_ns=10 * S, sent_ns=8 * S))
    sch.add(Demand("h2", 1, effective_ns=5 * S, sent_ns=3 * S))
    assert [sch.level_at(t * S) for t in (4, 5, 9, 10)] == [0, 1, 1, 2]
    # h1's older demand arriving late changes nothing; its newer one replaces it
    sch.add(Demand("h1", 5, effective_ns=9 * S, sent_ns=7 * S))
    assert sch.level_at(11 * S) == 2
    # h1 asks for 0 from 20 s: its 2 holds until then, every host switching at 20 s
    sch.add(Demand("h1", 0, effective_ns=20 * S, sent_ns=18 * S))
    assert sch.level_at(19 * S) == 2 and sch.level_at(20 * S) == 1
    # h2 sent at 3 s: stale from 103 s on (a host that stopped no longer holds the fleet)
    assert sch.level_at(102 * S) == 1 and sch.level_at(103 * S) == 0


def test_a_heartbeat_never_lets_the_level_fall_before_it_takes_effect() -> None:
    """h1 holds the fleet at 4 alone; its heartbeat 30 s later (the same 4, effective 2 s
    after it was sent) and a restarted agent's first demand (3, from 62 s) replace its
    entry before they take effect: the level in between is the replaced demand's, never
    h2's 1 (measured before this rule: two seconds at the lowest level every heartbeat)."""
    sch = Schedule(stale_s=100)
    sch.add(Demand("h1", 4, effective_ns=2 * S, sent_ns=0))
    sch.add(Demand("h2", 1, effective_ns=2 * S, sent_ns=0))
    sch.add(Demand("h1", 4, effective_ns=32 * S, sent_ns=30 * S))
    assert [sch.level_at(t * S) for t in (1, 2, 30, 31, 32)] == [0, 4, 4, 4, 4]
    sch.add(Demand("h1", 3, effective_ns=62 * S, sent_ns=60 * S))
    assert [sch.level_at(t * S) for t in (60, 61, 62)] == [4, 4, 3]
    # a replaced demand still goes stale: h1's 3 of 60 s holds until 160 s, not after
    sch.add(Demand("h1", 3, effective_ns=200 * S, sent_ns=125 * S))
    assert sch.level_at(129 * S) == 3 and sch.level_at(161 * S) == 0
    sch.remove("h1")
    assert sch.level_at(62 * S) == 1


def _feed(g: Governor, t0: float, t1: float, rate: float, level: int, records: int,
          step: float = 0.5) -> tuple[int, list[tuple[float, int]]]:
    """Records at `rate`/s from t0 to t1, observed every step under `level`; returns the
    counter and every (time, demand) the governor published."""
    out = []
    t = t0
    while t <= t1 + 1e-9:
        if g.observe(t, int(records), level):
            out.append((t, g.level))
            g.demand(t, int(t * S))
        records += rate * step
        t += step
    return int(records), out


def test_governor_rises_at_once_and_comes_down_one_step_with_room() -> None:
    g = Governor("h1", budget=1000, size=1448)
    # 3500 records/s at level 0: ceil(log2(3.5)) = 2, as soon as a second of rate is seen
    rec, out = _feed(g, 0.0, 3.0, 3500, 0, 0)
    assert out == [(1.0, 2)]               # the first demand: once a rate is measured
    # applied 2: 875/s measured, level 0 would make 3500: still 2, nothing new (the
    # heartbeat is due only 30 s after the last demand)
    rec, out = _feed(g, 3.5, 20.0, 875, 2, rec)
    assert out == [] and g.level == 2 and g.rate == pytest.approx(875)
    # the traffic falls to 250/s at level 0 (62.5/s measured at 2): level 1 would need
    # 500 <= 0.5 * 1000, so down to 1 after DOWN_AFTER_S of it, no earlier
    rec, out = _feed(g, 20.5, 60.0, 62.5, 2, rec)
    # the heartbeat 30 s after the last demand (at 1.0 s), then the step down
    assert out == [(31.0, 2), (out[1][0], 1)], out
    assert sl.DOWN_AFTER_S <= out[1][0] - 20.5 <= sl.DOWN_AFTER_S + sl.RATE_WINDOW_S
    # at level 1 (125/s measured): level 0 would need 250 <= 500: down to 0 after as long
    rec, out = _feed(g, 60.5, 100.0, 125, 1, rec)
    assert [level for _, level in out] == [1, 0] and g.level == 0, out   # heartbeat, step


def test_governor_never_takes_the_records_of_the_old_level_as_the_new_ones() -> None:
    """After a switch, records of bytes sampled before it keep coming for a hold: the rate
    is measured again only SETTLE_S later, so they cannot push the level further up."""
    g = Governor("h1", budget=1000, size=1448)
    rec, _ = _feed(g, 0.0, 2.0, 3500, 0, 0)
    assert g.level == 2
    # applied 2, but for a second the old level's records still arrive at 3500/s
    rec, out = _feed(g, 2.5, 3.5, 3500, 2, rec)
    rec, out2 = _feed(g, 4.0, 8.0, 875, 2, rec)
    assert out == out2 == [] and g.level == 2


def test_a_restarted_agent_keeps_the_fleet_level_until_it_has_measured() -> None:
    """Nothing is published before the first measured rate: the agent's previous demand
    (level 3, from the fleet's topic) stands and is applied; measured under level 3 at
    500/s, level 0 would make 4000/s against 1000: the first demand is 2, not 0. With no
    traffic the first demand is 0, one window later (a quiet host holds no one up)."""
    g = Governor("h1", budget=1000, size=1448)
    rec, out = _feed(g, 0.0, 0.5, 500, 0, 0)       # level 0 applied for the first tick
    assert out == []
    rec, out = _feed(g, 1.0, 6.0, 500, 3, rec)      # then the old demand's 3
    assert out and out[0] == (1.0 + sl.SETTLE_S + sl.RATE_WINDOW_S / 2, 2), out
    quiet = Governor("h2", budget=1000, size=1448)
    _, out = _feed(quiet, 0.0, 3.0, 0, 0, 0)
    assert out == [(sl.RATE_WINDOW_S / 2, 0)], out


def _loop() -> StrideLoop:
    ks = KafkaSettings("127.0.0.1:1")
    return StrideLoop(ks, "h1", 1000, 72400, lambda: 0, lambda level: None,
                      agent_producer(ks, 5), topic="lsx-unused")


def test_the_door_skips_what_is_not_a_demand_and_counts_it() -> None:
    loop = _loop()
    c = codec.default_codec()

    def demand(host: str, level: int) -> bytes:
        return c.encode("StrideDemand", {"schema_version": 1, "host": host, "level": level,
                                         "effective_ns": 0, "sent_ns": 0, "rate": 0.0,
                                         "budget": 0})
    loop.on_message(b"h2", b"\xc3\x01garbage")          # not Avro of ours
    loop.on_message(b"h3", demand("h2", 3))              # key and host disagree
    loop.on_message(b"h2", demand("h2", 15))             # 72400 << 15 >= 2^31
    loop.on_message(b"h2", c.encode("ClockModel", {
        "schema_version": 1, "manager": "m", "host": "h2", "ref_ns": 0, "offset_ns": 0.0,
        "drift_ppm": 0.0, "error_bound_ns": 0.0, "samples": 1, "min_delay_ns": 0.0,
        "updated_unix_ms": 0}))                          # another record type
    assert loop.counters.rejected == 4 and loop.schedule.demands == {}
    loop.on_message(b"h2", demand("h2", 14))
    # this host's own: its previous incarnation's stands until its first demand...
    loop.on_message(b"h1", demand("h1", 9))
    assert loop.counters.received == 2 and sorted(loop.schedule.demands) == ["h1", "h2"]
    assert loop.schedule.demands["h1"].level == 9
    loop.governor.demand(1.0, 0)                         # ...then its own count, from tick()
    loop.schedule.demands.pop("h1")
    loop.on_message(b"h1", demand("h1", 9))
    assert list(loop.schedule.demands) == ["h2"]
    loop.on_message(b"h2", None)                         # a tombstone: h2 left
    assert loop.schedule.demands == {}
