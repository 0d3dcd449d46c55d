"""What the views' tests share beyond fixtures (tests/views/conftest.py runs the demo):
the ``?since=`` bounds asked, and the windows as InfluxDB has them. A module of its own
name: test modules never import a conftest (tests/core/test_suite_layout.py)."""

from __future__ import annotations

from latscope.sinks.influx import M_FLOW, M_SEGMENT, unescape_name
from latscope.sinks.report_data import query
from latscope.sinks.settings import InfluxSettings

SINCE_OFFSETS = (6, 9.5)   # a window's start exactly (1 s windows), and between two
BAD_SINCE = ("abc", "10x", "", "12", "nan", "1.2.3", "FUTURE")


def window_counts(influx: InfluxSettings, run_id: str) -> dict[tuple[str, str], list]:
    """(flow, segment or "end_to_end") -> [(window start, epoch s; samples)] of every
    window the worker's sink wrote for the run: the windows as InfluxDB has them, apart
    from anything the worker keeps in memory."""
    out: dict[tuple[str, str], list] = {}
    for m in (M_SEGMENT, M_FLOW):
        rows = query(influx, f'''from(bucket: "{influx.bucket}") |> range(start: -2h)
  |> filter(fn: (r) => r._measurement == "{m}" and r.run == "{run_id}" and r._field == "count")''')
        for r in rows:
            seg = "end_to_end" if m == M_FLOW else unescape_name(r["segment"])
            out.setdefault((unescape_name(r["flow"]), seg), []).append(
                (r["_time"].timestamp(), int(r["_value"])))
    return out
