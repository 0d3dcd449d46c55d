"""The report's time range: absolute, clock-only, relative and --since bounds, against
hand-computed instants, and clear errors naming the flag."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from latscope.sinks.timerange import RangeError, time_range

NOW = datetime(2026, 5, 4, 10, 30, 0, tzinfo=UTC)


def test_forms() -> None:
    assert time_range(now=NOW).start == datetime(2026, 5, 4, 10, 20, tzinfo=UTC)
    r = time_range(since="1h30m", now=NOW)
    assert (r.start, r.stop) == (datetime(2026, 5, 4, 9, 0, tzinfo=UTC), NOW)
    assert time_range(start="90s", now=NOW).start == time_range(start="-90s", now=NOW).start
    r = time_range(start="-90s", stop="-500ms", now=NOW)
    assert r.start == datetime(2026, 5, 4, 10, 28, 30, tzinfo=UTC)
    assert r.stop == NOW - timedelta(milliseconds=500)
    r = time_range(start="2026-05-04T08:00:00+02:00", stop="2026-05-04T06:30:00Z", now=NOW)
    assert r.start == datetime(2026, 5, 4, 6, 0, tzinfo=UTC)
    assert r.stop == datetime(2026, 5, 4, 6, 30, tzinfo=UTC)
    local = time_range(start="2026-05-04 10:00:00", stop="now", now=NOW)   # naive: local time
    assert local.start == datetime(2026, 5, 4, 10, 0).astimezone()
    today = time_range(start="10:29:01.5", now=NOW)
    day = NOW.astimezone().date()
    assert today.start == datetime(day.year, day.month, day.day, 10, 29, 1, 500_000).astimezone()
    assert "range(start: 2026-05-04T" in time_range(since="5m", now=NOW).flux()


@pytest.mark.parametrize(("kw", "msg"), [
    ({"since": "10 minutes"}, "--since '10 minutes': expected a duration"),
    ({"start": "yesterday"}, "--from 'yesterday': expected an ISO date"),
    ({"start": "-5x"}, "--from '-5x': expected a duration"),
    ({"since": "5m", "start": "-1m"}, "--since and --from both given"),
    ({"start": "-1m", "stop": "-2m"}, "ends .* before it starts"),
])
def test_errors_name_the_flag(kw: dict, msg: str) -> None:
    with pytest.raises(RangeError, match=msg):
        time_range(now=NOW, **kw)
