"""``latscope report``: Flux queries and PNG plots of what the stream wrote to InfluxDB.

The three views the original LatScope drew with gnuplot:

* ``segments_p50.png``  per flow, its main-path segments (≥ 1/5 of the most frequent one's
                        count) stacked in path order (mean of window p50s)
* ``layer_cdf.png``     per flow, the CDF of each layer's per-sample total (raw samples)
* ``p99_over_time.png`` per flow, every segment's window p99 over time
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from influxdb_client import InfluxDBClient

from latscope.sinks.influx import M_SAMPLE, M_SEGMENT, unescape_name
from latscope.sinks.settings import InfluxSettings

DURATION_RE = re.compile(r"^([0-9]+(ns|us|ms|s|m|h|d|w))+$")
LAYER_COLORS = {"socket": "#4e79a7", "tcp": "#f28e2b", "ip": "#59a14f", "qdisc": "#e15759",
                "device": "#b07aa1", "virtual": "#76b7b2", "wire": "#edc948"}


class ReportError(ValueError):
    """Bad arguments or nothing to plot."""


@dataclass
class Report:
    files: list[Path]
    flows: list[str]
    segments: int
    samples: int


def _filter(run: str | None) -> str:
    return f' and r.run == "{run}"' if run else ""


def query(settings: InfluxSettings, flux: str) -> list[Any]:
    with InfluxDBClient(url=settings.url, token=settings.token, org=settings.org,
                        timeout=60_000) as client:
        return [rec for table in client.query_api().query(flux) for rec in table.records]


def segment_rows(s: InfluxSettings, since: str, run: str | None) -> list[Any]:
    return query(s, f'''
from(bucket: "{s.bucket}") |> range(start: -{since})
  |> filter(fn: (r) => r._measurement == "{M_SEGMENT}"{_filter(run)}
                       and (r._field == "p50" or r._field == "p99" or r._field == "pos"
                            or r._field == "count"))
  |> keep(columns: ["_time", "_value", "_field", "flow", "segment", "layer"])''')


def layer_rows(s: InfluxSettings, since: str, run: str | None) -> list[Any]:
    return query(s, f'''
from(bucket: "{s.bucket}") |> range(start: -{since})
  |> filter(fn: (r) => r._measurement == "{M_SAMPLE}"{_filter(run)} and r._field =~ /^layer_/)
  |> keep(columns: ["_value", "_field", "flow"])''')


def make_report(settings: InfluxSettings, out: Path, since: str = "10m",
                run: str | None = None) -> Report:
    if not DURATION_RE.match(since):
        raise ReportError(f"--since {since!r}: expected a Flux duration like 10m, 1h30m, 2d")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    seg = segment_rows(settings, since, run)
    if not seg:
        raise ReportError(f"no {M_SEGMENT} points in bucket {settings.bucket} for the last "
                          f"{since}{f' with run={run}' if run else ''}: nothing to plot")
    p50: dict[tuple[str, str], list[float]] = defaultdict(list)
    p99: dict[tuple[str, str], list[tuple[Any, float]]] = defaultdict(list)
    pos: dict[tuple[str, str], int] = {}
    count: dict[tuple[str, str], float] = defaultdict(float)
    layer: dict[tuple[str, str], str] = {}
    for r in seg:
        k = (unescape_name(r["flow"]), unescape_name(r["segment"]))
        layer[k] = r["layer"]
        if r["_field"] == "p50":
            p50[k].append(r["_value"])
        elif r["_field"] == "p99":
            p99[k].append((r["_time"], r["_value"]))
        elif r["_field"] == "count":
            count[k] += r["_value"]
        else:
            pos[k] = min(pos.get(k, 1 << 30), int(r["_value"]))
    flows = sorted({f for f, _ in layer})
    out.mkdir(parents=True, exist_ok=True)
    files = []

    # 1. stacked p50 per flow, path order
    fig, ax = plt.subplots(figsize=(11, 1.2 + 0.9 * len(flows)))
    seen_layers: set[str] = set()
    for y, flow in enumerate(flows):
        # The main path only: detours of samples that missed a point (rare segments such
        # as sock_send→dev_rx) would stack on top of the segments they skip.
        most = max(count[k] for k in p50 if k[0] == flow)
        keys = sorted((k for k in p50 if k[0] == flow and count[k] >= most / 5),
                      key=lambda k: pos.get(k, 0))
        left = 0.0
        for k in keys:
            width = sum(p50[k]) / len(p50[k]) / 1000
            lay = layer[k]
            ax.barh(y, width, left=left, color=LAYER_COLORS.get(lay, "grey"),
                    edgecolor="white", label=None if lay in seen_layers else lay)
            seen_layers.add(lay)
            left += width
    ax.set_yticks(range(len(flows)), flows)
    ax.set_xlabel("µs (mean of window p50s), segments in path order")
    ax.set_title(f"LatScope: where the latency goes (last {since})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    files.append(out / "segments_p50.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    # 2. per-layer CDFs of per-sample totals
    lay_rows = layer_rows(settings, since, run)
    per: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in lay_rows:
        per[unescape_name(r["flow"])][r["_field"].removeprefix("layer_")].append(
            r["_value"] / 1000)
    cdf_flows = sorted(per) or flows
    fig, axes = plt.subplots(len(cdf_flows), 1, figsize=(9, 3 * len(cdf_flows)), squeeze=False)
    for ax, flow in zip(axes[:, 0], cdf_flows, strict=True):
        for lay, values in sorted(per.get(flow, {}).items()):
            values.sort()
            n = len(values)
            ax.step(values, [(i + 1) / n for i in range(n)], where="post",
                    color=LAYER_COLORS.get(lay, "grey"), label=f"{lay} ({n})")
        ax.set_xscale("symlog", linthresh=1.0)
        ax.set_title(f"{flow}: per-layer delay per sample (CDF)")
        ax.set_xlabel("µs")
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7)
    fig.tight_layout()
    files.append(out / "layer_cdf.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)

    # 3. p99 over time per segment
    fig, axes = plt.subplots(len(flows), 1, figsize=(11, 3.2 * len(flows)), squeeze=False)
    for ax, flow in zip(axes[:, 0], flows, strict=True):
        for k in sorted((k for k in p99 if k[0] == flow), key=lambda k: pos.get(k, 0)):
            pts = sorted(p99[k])
            ax.plot([t for t, _ in pts], [v / 1000 for _, v in pts], marker=".", linewidth=1,
                    label=k[1], color=LAYER_COLORS.get(layer[k]))
        ax.set_yscale("symlog", linthresh=1.0)
        ax.set_title(f"{flow}: p99 per segment over time")
        ax.set_ylabel("µs")
        ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    files.append(out / "p99_over_time.png")
    fig.savefig(files[-1], dpi=110)
    plt.close(fig)
    return Report(files, flows, len(layer), sum(len(v) for f in per.values() for v in f.values()))
