"""``latscope report``: per flow, one set of PNGs drawn from what the stream wrote to
InfluxDB, and an HTML index linking them with the numbers beside them.

Per flow (folder ``<out>/<flow>/``):

* ``breakdown.png``       the main path's segments in path order, each starting where the
                          one before ends (p50), with its p99 beside: where the time goes
* ``e2e_vs_wire.png``     per sample: the end-to-end delay and the wire ("network") part
* ``layers_per_sample.png`` per sample: each layer's share, over time
* ``layer_cdf.png``       per layer: the CDF of the per-sample delay
* ``p99_over_time.png``   each main-path segment's window p99 over time, at most
                          ``PER_AXIS`` series an axis, legends outside the plots
* ``throughput.png``      the flow's context per host (``latscope_flow_stats``): what the
                          application wrote and read, what the devices sent and received
                          (Mbit/s), and the resent share of the segments sent
* ``socket_process.png``  per socket (``latscope_flow_socket``): smoothed RTT, cwnd, and
                          its process's CPU % and resident memory

Time axes are wall-clock ``HH:MM:SS`` (local time) and span the flow's data, never more.
An interval's rates are drawn as a step over the interval (they are its averages; a last
interval cut short ends early), each host in one colour on every axis, sending solid and
receiving dashed.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from latscope.schemas.points import LAYER_COLORS
from latscope.sinks.influx import M_SEGMENT
from latscope.sinks.report_data import FlowData, Series, load
from latscope.sinks.report_index import write_index
from latscope.sinks.settings import InfluxSettings
from latscope.sinks.timerange import RangeError, TimeRange

PER_AXIS = 8
DPI = 100


class ReportError(ValueError):
    """Bad arguments or nothing to plot."""


@dataclass
class Report:
    out: Path
    index: Path
    files: list[Path]
    flows: list[str]
    segments: int
    samples: int
    span: TimeRange
    # file -> every time axis's (start, end), epoch seconds, as drawn
    time_axes: dict[str, list[tuple[float, float]]] = field(default_factory=dict)
    # file -> "axis: series" -> (interval start, epoch s; value as plotted; the interval's
    # length as drawn, s) of the flow context figures, so what a figure shows can be
    # checked against what was sent
    figure_data: dict[str, dict[str, list[tuple[float, float | None, float]]]] = field(
        default_factory=dict)


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "_"


class _Figures:
    """Writes one flow's figures, remembering every time axis it drew."""

    def __init__(self, folder: Path, flow: FlowData, asked: TimeRange) -> None:
        self.folder, self.flow = folder, flow
        self.files: list[Path] = []
        self.time_axes: dict[str, list[tuple[float, float]]] = {}
        self.data: dict[str, dict[str, list[tuple[float, float | None, float]]]] = {}
        span = flow.span()
        assert span is not None
        pad = timedelta(milliseconds=200)
        # an interval's rates hold to its end, which may lie past the range asked for
        self.t0, self.t1 = span[0] - pad, min(span[1], asked.stop) + pad
        self.tz = datetime.now().astimezone().tzinfo

    def time_axis(self, ax: Any, name: str, label: bool = True) -> None:
        import matplotlib.dates as mdates

        ax.set_xlim(self.t0, self.t1)
        ax.xaxis.set_major_locator(mdates.AutoDateLocator(tz=self.tz, minticks=4, maxticks=9))
        ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=self.tz))
        if label:
            ax.set_xlabel(f"time ({datetime.now().astimezone().tzname()})")
        lo, hi = ax.get_xlim()
        self.time_axes.setdefault(name, []).append(
            (mdates.num2date(lo).timestamp(), mdates.num2date(hi).timestamp()))

    def save(self, fig: Any, name: str) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / name
        fig.savefig(path, dpi=DPI, bbox_inches="tight")
        _plt().close(fig)
        self.files.append(path)

    def finish(self, fig: Any, ax: Any, what: str, name: str, timed: bool = True,
               **legend: Any) -> None:
        """Grid, the legend outside the plot, the title; the time axis; written."""
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8, **legend)
        ax.set_title(self.title(what))
        if timed:
            self.time_axis(ax, name)
        self.save(fig, name)

    def title(self, what: str) -> str:
        f = self.flow
        return f"{f.name} ({f.src_host} → {f.dst_host}): {what}"


def _gapped(times: list[datetime], values: list[float | None]) -> tuple[list, list]:
    """The points with a break (NaN) wherever the data pauses for longer than 3 steps, so
    a line never bridges time without data."""
    pts = [(t, v) for t, v in zip(times, values, strict=True) if v is not None]
    if len(pts) < 3:
        return [t for t, _ in pts], [v for _, v in pts]
    steps = sorted((b[0] - a[0]).total_seconds() for a, b in itertools.pairwise(pts))
    gap = max(3 * steps[len(steps) // 2], 1.0)
    xs, ys = [pts[0][0]], [pts[0][1]]
    for (ta, _), (tb, vb) in itertools.pairwise(pts):
        if (tb - ta).total_seconds() > gap:
            xs.append(ta + (tb - ta) / 2)
            ys.append(float("nan"))
        xs.append(tb)
        ys.append(vb)
    return xs, ys


def _value_axis(ax: Any, values: list[float], label: str) -> None:
    """Linear, unless the values span more than two decades (then log above 10 µs); plain
    numbers as tick labels."""
    from matplotlib.ticker import FuncFormatter

    pos = [v for v in values if v == v and v > 0]
    if pos and max(pos) / max(min(pos), 1.0) > 100:
        ax.set_yscale("symlog", linthresh=10.0)
        label += " (log above 10)"
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if abs(v) >= 10
                                               else f"{v:g}"))
    ax.set_ylabel(label)


def _breakdown(fx: _Figures, path: list[Series]) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.32 * len(path)))
    left = 0.0
    for y, s in enumerate(path):
        width = max(0.0, s.p50_weighted())
        color = LAYER_COLORS.get(s.layer, "grey")
        ax.barh(y, width, left=left, color=color, edgecolor="black", linewidth=0.4, height=0.7)
        ax.text(left + width, y, f"  {s.p50_weighted():.1f} µs (p99 {max(s.p99):.1f})",
                va="center", fontsize=7)
        left += width
    ax.set_yticks(range(len(path)), [f"{s.name}  [{s.layer}]" for s in path], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, left * 1.25 or 1)
    ax.set_xlabel("µs along the path (each segment's p50: count-weighted mean of its windows' "
                  "p50s; the highest window p99 beside)")
    ax.grid(axis="x", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in LAYER_COLORS.values()]
    ax.legend(handles, list(LAYER_COLORS), loc="upper left", bbox_to_anchor=(1.01, 1),
              fontsize=8, title="layer")
    ax.set_title(fx.title("where the time goes, segment by segment"))
    fx.save(fig, "breakdown.png")


def _e2e_vs_wire(fx: _Figures) -> None:
    f = fx.flow
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.6))
    e2e = [v for v in f.sample_e2e if v is not None]
    wire = f.sample_layers.get("wire", [])
    ax.plot(*_gapped(f.sample_times, f.sample_e2e), ".-", ms=3, lw=0.6, color="#333",
            label=f"end to end ({len(e2e)} samples)")
    ax.plot(*_gapped(f.sample_times, wire), ".-", ms=3, lw=0.6,
            color=LAYER_COLORS["wire"], label="wire (network)")
    _value_axis(ax, [v for v in (*e2e, *wire) if v is not None], "µs per sample")
    fx.finish(fig, ax, "end-to-end delay vs its wire (network) part, per sample",
              "e2e_vs_wire.png")


def _layers_per_sample(fx: _Figures) -> None:
    f = fx.flow
    plt = _plt()
    fig, ax = plt.subplots(figsize=(11, 3.6))
    shown: list[float] = []
    for lay in [x for x in LAYER_COLORS if x in f.sample_layers]:
        xs, ys = _gapped(f.sample_times, f.sample_layers[lay])
        ax.plot(xs, ys, ".-", ms=2.5, lw=0.4, color=LAYER_COLORS[lay], label=lay)
        shown += ys
    _value_axis(ax, shown, "µs per sample")
    fx.finish(fig, ax, "each layer's delay per sample", "layers_per_sample.png", markerscale=3)


def _layer_cdf(fx: _Figures) -> None:
    f = fx.flow
    plt = _plt()
    fig, ax = plt.subplots(figsize=(9, 4))
    for lay in [x for x in LAYER_COLORS if x in f.sample_layers]:
        values = sorted(v for v in f.sample_layers[lay] if v is not None)
        n = len(values)
        ax.step(values, [(i + 1) / n for i in range(n)], where="post",
                color=LAYER_COLORS[lay], label=f"{lay} ({n})")
    from matplotlib.ticker import FuncFormatter

    ax.set_xscale("symlog", linthresh=1.0)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if v >= 1 else f"{v:g}"))
    ax.set_xlabel("µs per sample in the layer (log above 1)")
    ax.set_ylabel("fraction of samples")
    ax.set_ylim(0, 1.02)
    fx.finish(fig, ax, "per-layer delay, CDF", "layer_cdf.png", timed=False)


def _p99_over_time(fx: _Figures, path: list[Series]) -> None:
    plt = _plt()
    groups = [path[i:i + PER_AXIS] for i in range(0, len(path), PER_AXIS)]
    fig, axes = plt.subplots(len(groups), 1, figsize=(11, 2.8 * len(groups)), squeeze=False,
                             sharex=True)
    cmap = plt.get_cmap("tab10")
    for g, (ax, group) in enumerate(zip(axes[:, 0], groups, strict=True)):
        for i, s in enumerate(group):
            ax.plot(*_gapped(s.times, list(s.p99)), ".-", ms=3, lw=1, color=cmap(i % 10),
                    label=f"{s.name} [{s.layer}]")
        _value_axis(ax, [v for s in group for v in s.p99], "p99 µs")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=7)
        ax.set_title(f"segments {g * PER_AXIS + 1}–{g * PER_AXIS + len(group)} of {len(path)} "
                     "in path order", fontsize=9)
        fx.time_axis(ax, "p99_over_time.png", label=ax is axes[-1, 0])
    fig.suptitle(fx.title("each segment's window p99 over time"))
    fx.save(fig, "p99_over_time.png")


# A panel: its y label and its series (label, interval starts, values, line style, the
# intervals' lengths in s: None for the flow's interval)
PanelSeries = tuple[str, list[datetime], list[float | None], dict[str, Any], list[float | None]]
Panel = tuple[str, list[PanelSeries]]


def _stepped(times: list[datetime], values: list[float | None], lengths: list[timedelta]
             ) -> tuple[list, list]:
    """Each interval's value held over the interval, to its own end where the next does
    not follow on (a last interval cut short), broken (NaN) where intervals are missing,
    so a line never bridges time nobody reported."""
    xs: list[datetime] = []
    ys: list[float] = []
    for i, (t, v) in enumerate(zip(times, values, strict=True)):
        xs.append(t)
        ys.append(float("nan") if v is None else v)
        end = t + lengths[i]
        if i + 1 == len(times) or times[i + 1] > end + lengths[i] / 2:
            xs += [end, end]
            ys += [ys[-1], float("nan")]
    return xs, ys


def _host_styles(flow: FlowData) -> dict[str, str]:
    """One colour per host, in path order, the same on every context axis."""
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {h: cmap(i % 10) for i, h in enumerate(flow.host_order())}


def _panels(fx: _Figures, name: str, what: str, panels: list[Panel]) -> None:
    """Stacked time axes sharing x, at most ``PER_AXIS`` series an axis (a panel with more
    goes on to the next axis), legends outside; each series' values kept in ``fx.data``."""
    axes_series = [(label, series[i:i + PER_AXIS])
                   for label, series in panels if series
                   for i in range(0, len(series), PER_AXIS)]
    if not axes_series:
        return
    plt = _plt()
    fig, axes = plt.subplots(len(axes_series), 1, figsize=(11, 0.6 + 2.3 * len(axes_series)),
                             squeeze=False, sharex=True)
    step = fx.flow.interval_s()
    data = fx.data.setdefault(name, {})
    for ax, (label, series) in zip(axes[:, 0], axes_series, strict=True):
        shown: list[float] = []
        for text, times, values, style, durations in series:
            secs = [d or step for d in durations]
            flat = "" if any(values) else " (0 throughout)"   # else hidden on the axis
            ax.plot(*_stepped(times, values, [timedelta(seconds=d) for d in secs]), lw=1.4,
                    label=text + flat, drawstyle="steps-post", **style)
            data[f"{label}: {text}"] = [(t.timestamp(), v, d) for t, v, d in
                                        zip(times, values, secs, strict=True)]
            shown += [v for v in values if v is not None]
        _value_axis(ax, shown, label)
        if ax.get_yscale() == "linear":
            ax.set_ylim(bottom=0, top=max([*shown, 0.0]) * 1.08 or 1.0)
        if not any(shown):   # a line on the axis is easily missed: say it
            ax.text(0.5, 0.5, "0 for every series in this range", transform=ax.transAxes,
                    ha="center", va="center", color="#555")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize=8)
        fx.time_axis(ax, name, label=ax is axes[-1, 0])
    fig.suptitle(fx.title(what))
    fig.tight_layout()
    fx.save(fig, name)


def _throughput(fx: _Figures) -> None:
    f = fx.flow
    color = _host_styles(f)
    app: list = []
    dev: list = []
    resent: list = []
    for host in f.host_order():
        h = f.hosts[host]
        for key, verb, out, solid in (("app_tx_bps", "sent", app, True),
                                      ("app_rx_bps", "read", app, False),
                                      ("dev_tx_bps", "tx", dev, True),
                                      ("dev_rx_bps", "rx", dev, False)):
            if any(h.rates[key]):
                out.append((f"{host} {verb}", h.times, [v / 1e6 for v in h.rates[key]],
                            {"color": color[host], "ls": "-" if solid else "--"}, h.durations))
        if any(v is not None for v in h.retrans_rate):
            resent.append((host, h.times, [None if v is None else 100 * v
                                           for v in h.retrans_rate], {"color": color[host]},
                           h.durations))
    _panels(fx, "throughput.png", "throughput and resends per host, each interval", [
        ("application, Mbit/s", app), ("devices (IP bytes), Mbit/s", dev),
        ("resent, % of segments sent", resent)])


def _socket_process(fx: _Figures) -> None:
    f = fx.flow
    color = _host_styles(f)

    def series(key: str, scale: float) -> list:
        out = []
        for s in f.sockets:
            vals = s.values[key]
            if any(v is not None for v in vals):
                out.append((s.label(), s.times,
                            [None if v is None else v * scale for v in vals],
                            {"color": color.get(s.host, "grey"),
                             "ls": "-" if s.side == "sender" else "--"}, [None] * len(vals)))
        return out

    _panels(fx, "socket_process.png", "each socket's TCP state and its process, each interval", [
        ("smoothed RTT, ms", series("srtt_us", 1e-3)), ("cwnd, segments", series("cwnd", 1.0)),
        ("process CPU, % of one CPU", series("cpu_percent", 1.0)),
        ("process RSS, MiB", series("rss_bytes", 1 / 2**20))])


def make_report(settings: InfluxSettings, out: Path, span: TimeRange, run: str | None = None,
                flows: list[str] | None = None,
                progress: Callable[[str], None] = lambda msg: None) -> Report:
    """Query the range (``run``'s points, ``flows`` only when given) and write the figures
    and ``index.html`` under ``out``."""
    data = load(settings, span, run, flows)
    data = {k: v for k, v in data.items() if v.segments}
    if not data:
        what = [f"run={run}"] if run else []
        what += [f"flow {', '.join(flows)}"] if flows else []
        raise ReportError(f"no {M_SEGMENT} points in bucket {settings.bucket} for "
                          f"{span.describe()}{' with ' + ' and '.join(what) if what else ''}: "
                          "nothing to plot")
    figures: dict[str, list[Path]] = {}
    axes: dict[str, list[tuple[float, float]]] = {}
    plotted: dict[str, dict[str, list[tuple[float, float | None, float]]]] = {}
    for i, name in enumerate(sorted(data)):
        flow = data[name]
        progress(f"drawing flow {name} ({i + 1}/{len(data)}, {len(flow.sample_times)} samples)…")
        fx = _Figures(out / _safe(name), flow, span)
        path = flow.main_path()
        _breakdown(fx, path)
        if flow.sample_times:
            _e2e_vs_wire(fx)
            _layers_per_sample(fx)
            _layer_cdf(fx)
        _p99_over_time(fx, path)
        if flow.hosts:
            _throughput(fx)
        if flow.sockets:
            _socket_process(fx)
        figures[name] = fx.files
        axes.update({str(fx.folder / k): v for k, v in fx.time_axes.items()})
        plotted.update({str(fx.folder / k): v for k, v in fx.data.items()})
    index = write_index(out, data, figures, span, run)
    files = [p for name in sorted(figures) for p in figures[name]]
    return Report(out, index, files, sorted(data), sum(len(f.segments) for f in data.values()),
                  sum(len(f.sample_times) for f in data.values()), span, axes, plotted)


__all__ = ["RangeError", "Report", "ReportError", "make_report"]
