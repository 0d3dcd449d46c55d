"""What a report draws, read from InfluxDB (Flux) per flow: the segments' and the end-to-end
window statistics and the raw samples' end-to-end, wire and per-layer delays."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from influxdb_client import InfluxDBClient

from latscope.sinks.influx import M_FLOW, M_SAMPLE, M_SEGMENT, stored_name, unescape_name
from latscope.sinks.settings import InfluxSettings
from latscope.sinks.timerange import TimeRange


@dataclass
class Series:
    """One segment's (or the end-to-end) closed windows, in time order; durations in µs."""

    name: str
    layer: str
    device: str | None = None
    pos: int = 1 << 30
    times: list[datetime] = field(default_factory=list)
    count: list[float] = field(default_factory=list)
    p50: list[float] = field(default_factory=list)
    p99: list[float] = field(default_factory=list)

    @property
    def total(self) -> int:
        return int(sum(self.count))

    def sort(self) -> None:
        """Time order (a series' points come from several Influx series, one per tag set)."""
        rows = sorted(zip(self.times, self.count, self.p50, self.p99, strict=True),
                      key=lambda r: r[0])
        self.times, self.count, self.p50, self.p99 = (list(c) for c in zip(*rows, strict=True))

    def p50_weighted(self) -> float:
        """The windows' p50s weighted by their counts."""
        n = sum(self.count)
        return sum(c * v for c, v in zip(self.count, self.p50, strict=True)) / n if n else 0.0


@dataclass
class FlowData:
    name: str
    src_host: str = ""
    dst_host: str = ""
    segments: dict[str, Series] = field(default_factory=dict)
    end_to_end: Series | None = None
    # raw samples: time, end-to-end µs (None: incomplete), wire µs, layer -> µs
    sample_times: list[datetime] = field(default_factory=list)
    sample_e2e: list[float | None] = field(default_factory=list)
    sample_layers: dict[str, list[float | None]] = field(default_factory=dict)

    def main_path(self) -> list[Series]:
        """The main path in path order: segments seen at least a fifth as often as the most
        frequent one. Samples that missed a point add detours (``sock_send→dev_rx``) that
        would stack on top of the steps they skip."""
        if not self.segments:
            return []
        most = max(s.total for s in self.segments.values())
        return sorted((s for s in self.segments.values() if s.total >= most / 5),
                      key=lambda s: (s.pos, s.name))

    def span(self) -> tuple[datetime, datetime] | None:
        times = [*self.sample_times, *(t for s in self.segments.values() for t in s.times)]
        return (min(times), max(times)) if times else None


def query(settings: InfluxSettings, flux: str) -> list[Any]:
    with InfluxDBClient(url=settings.url, token=settings.token, org=settings.org,
                        timeout=60_000) as client:
        return [rec for table in client.query_api().query(flux) for rec in table.records]


def _flux_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _where(run: str | None, flows: list[str] | None) -> str:
    out = ""
    if run:
        out += f" and r.run == {_flux_str(run)}"
    if flows:
        out += " and (" + " or ".join(f"r.flow == {_flux_str(stored_name(f))}" for f in flows) + ")"
    return out


def load(settings: InfluxSettings, span: TimeRange, run: str | None = None,
         flows: list[str] | None = None) -> dict[str, FlowData]:
    """Every flow with window statistics in the range (of ``run``, among ``flows``)."""
    head = f'from(bucket: {_flux_str(settings.bucket)}) |> {span.flux()}'
    where = _where(run, flows)
    out: dict[str, FlowData] = {}
    for measurement in (M_SEGMENT, M_FLOW):
        rows = query(settings, f'''{head}
  |> filter(fn: (r) => r._measurement == "{measurement}"{where})
  |> filter(fn: (r) => r._field == "count" or r._field == "p50" or r._field == "p99"
                       or r._field == "pos")
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> sort(columns: ["_time"])''')
        for r in rows:
            f = out.setdefault(r["flow"], FlowData(unescape_name(r["flow"])))
            f.src_host, f.dst_host = r.values.get("src_host", ""), r.values.get("dst_host", "")
            if measurement == M_FLOW:
                s = f.end_to_end = f.end_to_end or Series("end to end", "end_to_end")
            else:
                s = f.segments.get(r["segment"])
                if s is None:
                    s = f.segments[r["segment"]] = Series(unescape_name(r["segment"]), r["layer"],
                                                          r.values.get("device"))
                if r.values.get("pos") is not None:
                    s.pos = min(s.pos, int(r["pos"]))
            s.times.append(r["_time"])
            s.count.append(r["count"])
            s.p50.append(r["p50"] / 1000)
            s.p99.append(r["p99"] / 1000)
    for f in out.values():
        for s in (*f.segments.values(), *([f.end_to_end] if f.end_to_end else [])):
            s.sort()
    _samples(settings, head, where, out)
    return out


def _samples(settings: InfluxSettings, head: str, where: str, out: dict[str, FlowData]) -> None:
    rows = query(settings, f'''{head}
  |> filter(fn: (r) => r._measurement == "{M_SAMPLE}"{where})
  |> filter(fn: (r) => r._field == "end_to_end" or r._field =~ /^layer_/)
  |> drop(columns: ["complete", "_start", "_stop"])
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> sort(columns: ["_time"])''')
    layers: dict[str, set[str]] = defaultdict(set)
    for r in rows:
        layers[r["flow"]].update(k for k in r.values if k.startswith("layer_"))
    for r in rows:
        f = out.get(r["flow"])
        if f is None:   # samples without window statistics: not a flow of this report
            continue
        f.sample_times.append(r["_time"])
        e2e = r.values.get("end_to_end")
        f.sample_e2e.append(None if e2e is None else e2e / 1000)
        for k in layers[r["flow"]]:
            v = r.values.get(k)
            f.sample_layers.setdefault(k.removeprefix("layer_"), []).append(
                None if v is None else v / 1000)
