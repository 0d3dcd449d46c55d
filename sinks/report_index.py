"""The report's ``index.html``: per flow its figures, each linked, with the numbers beside."""

from __future__ import annotations

import html
from datetime import datetime
from pathlib import Path

from latscope.sinks.report_data import FlowData
from latscope.sinks.timerange import TimeRange

_CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:20px;color:#222;}
h2{border-top:1px solid #ccc;padding-top:14px}table{border-collapse:collapse;margin:6px 0}
h3{font-size:14px;margin:14px 0 2px}
td,th{padding:2px 9px;border-bottom:1px solid #eee;text-align:left;white-space:nowrap}
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}.fig{margin:10px 0}
.fig img{max-width:100%;border:1px solid #ddd}.hint{color:#666;font-size:12px}
.flow{display:flex;flex-wrap:wrap;gap:24px;align-items:flex-start}.nums{position:sticky;top:8px;flex:0 0 auto}
.figs{flex:1 1 0;min-width:640px}"""


def _quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(q * len(s) + 0.999999) - 1))]


def _num(v: float) -> str:
    return f"{v:,.1f}"


def _ms(us: float) -> str:
    """µs as ms to 3 digits: a loopback RTT of 34 µs is 0.034, not 0.0."""
    return f"{us / 1000:,.1f}" if us >= 10_000 else f"{us / 1000:.3g}"


def _mbit(bps: list[float]) -> str:
    return f"{max(bps, default=0.0) / 1e6:,.2f}"


def _context_html(f: FlowData) -> str:
    """Per host: bytes (exact, summed over the intervals), peak rates and resends; per
    socket: RTT, cwnd, its process's CPU and memory."""
    if not f.hosts and not f.sockets:
        return ""
    e = html.escape
    rows = []
    for host in f.host_order():
        h = f.hosts[host]
        t = h.totals
        resent = (f"{t['retrans_segs']:,} ({100 * t['retrans_segs'] / t['dev_segs_tx']:.2f} %)"
                  if t["dev_segs_tx"] else "–")
        rows.append(
            f"<tr><td>{e(host)}</td><td class=n>{t['app_bytes_written']:,}</td>"
            f"<td class=n>{t['app_bytes_read']:,}</td><td class=n>{t['dev_bytes_tx']:,}</td>"
            f"<td class=n>{t['dev_bytes_rx']:,}</td>"
            f"<td class=n>{_mbit(h.rates['app_tx_bps'] + h.rates['app_rx_bps'])}</td>"
            f"<td class=n>{_mbit(h.rates['dev_tx_bps'] + h.rates['dev_rx_bps'])}</td>"
            f"<td class=n>{resent}</td><td class=n>{len(h.times)}</td></tr>")
    socks = []
    for s in f.sockets:
        rtt, cwnd, cpu, rss = ([v for v in s.values[k] if v is not None]
                               for k in ("srtt_us", "cwnd", "cpu_percent", "rss_bytes"))
        socks.append(
            f"<tr><td>{e(s.label())}</td>"
            f"<td class=n>{_ms(_quantile(rtt, 0.5)) if rtt else '–'}</td>"
            f"<td class=n>{_ms(max(rtt)) if rtt else '–'}</td>"
            f"<td class=n>{int(_quantile(cwnd, 0.5)) if cwnd else '–'}</td>"
            f"<td class=n>{_num(sum(cpu) / len(cpu)) if cpu else '–'}</td>"
            f"<td class=n>{_num(max(cpu)) if cpu else '–'}</td>"
            f"<td class=n>{_num(max(rss) / 2**20) if rss else '–'}</td></tr>")
    out = ("<h3>flow context</h3><table><tr><th>host</th><th class=n>app bytes sent</th>"
           "<th class=n>app bytes read</th><th class=n>device bytes tx</th>"
           "<th class=n>device bytes rx</th><th class=n>app peak Mbit/s</th>"
           "<th class=n>device peak Mbit/s</th><th class=n>resent segments</th>"
           f"<th class=n>intervals</th></tr>{''.join(rows)}</table>")
    if socks:
        out += ("<table><tr><th>socket: process [pid]</th><th class=n>RTT p50 ms</th>"
                "<th class=n>RTT max ms</th><th class=n>cwnd p50</th><th class=n>CPU % mean"
                "</th><th class=n>CPU % max</th><th class=n>RSS max MiB</th></tr>"
                f"{''.join(socks)}</table>")
    return out + ("<p class=hint>bytes: summed over the agents' intervals; device bytes are "
                  "IP bytes on the host's exit devices; RTT: smoothed (tcp_info), p50 over the "
                  "intervals; CPU: % of one CPU.</p>")


def _flow_html(f: FlowData, figures: list[Path], out: Path) -> str:
    e = html.escape
    e2e = [v for v in f.sample_e2e if v is not None]
    if e2e:
        head = (f"{len(e2e)} complete samples: end to end p50 <b>{_num(_quantile(e2e, 0.5))} µs"
                f"</b>, p99 <b>{_num(_quantile(e2e, 0.99))} µs</b> (from the raw samples)")
    elif f.end_to_end is not None:
        head = (f"{f.end_to_end.total} complete samples: end to end p50 "
                f"{_num(f.end_to_end.p50_weighted())} µs (windows' mean), p99 "
                f"{_num(max(f.end_to_end.p99))} µs (highest window)")
    else:
        head = "no complete sample"
    span = f.span()
    when = (f"{span[0].astimezone():%H:%M:%S} – {span[1].astimezone():%H:%M:%S}" if span else "")
    rows = "".join(
        f"<tr><td>{i + 1}</td><td>{e(s.name)}</td><td>{e(s.layer)}</td>"
        f"<td>{e(s.device or '')}</td><td class=n>{s.total}</td>"
        f"<td class=n>{_num(s.p50_weighted())}</td><td class=n>{_num(max(s.p99))}</td></tr>"
        for i, s in enumerate(f.main_path()))
    others = len(f.segments) - len(f.main_path())
    figs = "".join(
        f'<div class=fig><a href="{e(p.relative_to(out).as_posix())}">'
        f'<img src="{e(p.relative_to(out).as_posix())}" alt="{e(p.stem)}"></a></div>'
        for p in figures)
    return (f'<h2 id="{e(f.name)}">{e(f.name)}: {e(f.src_host)} → {e(f.dst_host)}</h2>'
            f"<div class=flow><div class=nums><p>{head}<br>data {when}</p>"
            "<table><tr><th>#</th><th>segment (main path)</th><th>layer</th><th>device</th>"
            "<th class=n>samples</th><th class=n>p50 µs</th><th class=n>p99 µs</th></tr>"
            f"{rows}</table><p class=hint>p50: count-weighted mean of the windows' p50s; "
            f"p99: the highest window p99.{f' {others} rarer detour segment(s) left out.' if others else ''}"
            f"</p>{_context_html(f)}</div><div class=figs>{figs}<p class=hint>click a figure for "
            "its full size</p></div></div>")


def write_index(out: Path, flows: dict[str, FlowData], figures: dict[str, list[Path]],
                span: TimeRange, run: str | None) -> Path:
    """``figures``: flow name -> its PNGs (under ``out``)."""
    out.mkdir(parents=True, exist_ok=True)
    e = html.escape
    body = "".join(_flow_html(flows[n], figures.get(n, []), out) for n in sorted(flows))
    toc = " · ".join(f'<a href="#{e(n)}">{e(n)}</a>' for n in sorted(flows))
    page = (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>LatScope report"
            f"</title><style>{_CSS}</style></head><body><h1>LatScope report</h1>"
            f"<p>{e(span.describe())}{' · run ' + e(run) if run else ''} · written "
            f"{datetime.now().astimezone():%Y-%m-%d %H:%M:%S %Z}</p><p>flows: {toc}</p>"
            f"{body}</body></html>\n")
    index = out / "index.html"
    index.write_text(page)
    return index
