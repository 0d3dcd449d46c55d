"""What a report draws, read from InfluxDB (Flux) per flow: the segments' and the end-to-end
window statistics, the raw samples' end-to-end, wire and per-layer delays, and the flow's
context per host and interval (``latscope_flow_stats``: throughput, resends;
``latscope_flow_socket``: TCP state and the owning process, per socket)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from influxdb_client import InfluxDBClient

from latscope.sinks.flow_stats import M_FLOW_SOCKET, M_FLOW_STATS
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


RATES = ("app_tx_bps", "app_rx_bps", "dev_tx_bps", "dev_rx_bps")
COUNTS = ("app_bytes_written", "app_bytes_read", "dev_bytes_tx", "dev_bytes_rx",
          "dev_segs_tx", "retrans_segs")
SOCKET_FIELDS = ("srtt_us", "cwnd", "cpu_percent", "rss_bytes", "pid")
_RATE_OF = {"app_tx_bps": "app_bytes_written", "app_rx_bps": "app_bytes_read",
            "dev_tx_bps": "dev_bytes_tx", "dev_rx_bps": "dev_bytes_rx"}


@dataclass
class HostStats:
    """One host's intervals of a flow (``latscope_flow_stats``), in time order: each time is
    an interval's start, rates in bit/s over it, ``retrans_rate`` None when it sent nothing;
    ``durations``: each interval's length in s (a last one ends early when its flow or agent
    does), None where it moved nothing; ``totals``: the counts summed over the intervals."""

    host: str
    times: list[datetime] = field(default_factory=list)
    durations: list[float | None] = field(default_factory=list)
    rates: dict[str, list[float]] = field(default_factory=lambda: {k: [] for k in RATES})
    retrans_rate: list[float | None] = field(default_factory=list)
    totals: dict[str, int] = field(default_factory=lambda: dict.fromkeys(COUNTS, 0))


@dataclass
class SocketStats:
    """One socket of a flow on a host (``latscope_flow_socket``: its side and its process's
    command), in time order: smoothed RTT µs, cwnd segments, CPU % of one CPU, RSS bytes."""

    host: str
    side: str
    command: str
    times: list[datetime] = field(default_factory=list)
    values: dict[str, list[float | None]] = field(
        default_factory=lambda: {k: [] for k in SOCKET_FIELDS})

    @property
    def pids(self) -> list[int]:
        return sorted({int(p) for p in self.values["pid"] if p is not None})

    def label(self) -> str:
        pids = ",".join(map(str, self.pids)) or "?"
        return f"{self.host} {self.side}: {self.command or '?'} [{pids}]"


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
    hosts: dict[str, HostStats] = field(default_factory=dict)
    sockets: list[SocketStats] = field(default_factory=list)

    def interval_s(self) -> float:
        """The flow-statistics interval: the shortest step between one host's intervals (the
        stream's window length; 1 s when a host reported once)."""
        steps = [(b - a).total_seconds() for h in self.hosts.values()
                 for a, b in zip(h.times, h.times[1:], strict=False) if b > a]
        return min(steps, default=1.0)

    def host_order(self) -> list[str]:
        """The hosts with context, in path order (sender first), then any other by name."""
        order: list[str] = []
        for s in self.main_path():
            for point in s.name.split("→"):
                host = point.split(":")[0]
                if host not in order:
                    order.append(host)
        for h in (self.src_host, self.dst_host):
            if h and h not in order:
                order.append(h)
        return [h for h in order if h in self.hosts] + sorted(
            h for h in self.hosts if h not in order)

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
        """From the first to the last time of any data; an interval's rates hold until its
        end, so the context's last interval counts to its end."""
        times = [*self.sample_times, *(t for s in self.segments.values() for t in s.times)]
        step = self.interval_s()
        for h in self.hosts.values():
            times += [t + timedelta(seconds=d or step) for t, d in zip(h.times, h.durations,
                                                                        strict=True)]
            times += h.times[:1]
        for s in self.sockets:
            times += [*s.times[:1], *(t + timedelta(seconds=step) for t in s.times[-1:])]
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
    _context(settings, head, where, out)
    return out


def _duration(row: dict[str, Any]) -> float | None:
    """An interval's length in s, which InfluxDB does not keep: bytes over their rate (the
    sink wrote ``rate = bytes * 8 / duration``), from the largest count for precision."""
    pairs = [(row.get(count) or 0, row.get(rate) or 0.0) for rate, count in _RATE_OF.items()]
    count, rate = max(pairs)
    return count * 8 / rate if count > 0 and rate > 0 else None


def _context(settings: InfluxSettings, head: str, where: str, out: dict[str, FlowData]) -> None:
    """Each flow's FlowStats per host and its sockets (flows without latency windows: none)."""
    rows = query(settings, f'''{head}
  |> filter(fn: (r) => r._measurement == "{M_FLOW_STATS}"{where})
  |> filter(fn: (r) => {" or ".join(f'r._field == "{k}"' for k in (*RATES, *COUNTS, "retrans_rate"))})
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> sort(columns: ["_time"])''')
    for r in rows:
        f = out.get(r["flow"])
        if f is None:
            continue
        h = f.hosts.setdefault(r["host"], HostStats(r["host"]))
        h.times.append(r["_time"])
        h.durations.append(_duration(r.values))
        for k in RATES:
            h.rates[k].append(float(r.values.get(k) or 0.0))
        h.retrans_rate.append(r.values.get("retrans_rate") if r.values.get("dev_segs_tx") else None)
        for k in COUNTS:
            h.totals[k] += int(r.values.get(k) or 0)
    rows = query(settings, f'''{head}
  |> filter(fn: (r) => r._measurement == "{M_FLOW_SOCKET}"{where})
  |> filter(fn: (r) => {" or ".join(f'r._field == "{k}"' for k in SOCKET_FIELDS)})
  |> pivot(rowKey: ["_time"], columnKey: ["_field"], valueColumn: "_value")
  |> sort(columns: ["_time"])''')
    socks: dict[tuple[str, str, str, str], SocketStats] = {}
    for r in rows:
        f = out.get(r["flow"])
        if f is None:
            continue
        key = (r["flow"], r["host"], r.values.get("side", ""), r.values.get("command", ""))
        sock = socks.get(key)
        if sock is None:
            sock = socks[key] = SocketStats(*key[1:])
            f.sockets.append(sock)
        sock.times.append(r["_time"])
        for k in SOCKET_FIELDS:
            sock.values[k].append(r.values.get(k))
    for f in out.values():
        # one host's points may come in several tables (run tags): into time order
        for h in f.hosts.values():
            h.times, h.retrans_rate, h.durations, *rates = _by_time(
                h.times, h.retrans_rate, h.durations, *h.rates.values())
            h.rates = dict(zip(h.rates, rates, strict=True))
        for sock in f.sockets:
            sock.times, *values = _by_time(sock.times, *sock.values.values())
            sock.values = dict(zip(sock.values, values, strict=True))
        rank = {host: i for i, host in enumerate(f.host_order())}
        f.sockets.sort(key=lambda s: (rank.get(s.host, len(rank)), s.side != "sender", s.command))


def _by_time(times: list[datetime], *columns: list) -> list[list]:
    """``times`` and each column reordered by time."""
    order = sorted(range(len(times)), key=times.__getitem__)
    return [[col[i] for i in order] for col in (times, *columns)]


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
