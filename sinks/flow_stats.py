"""InfluxDB lines of a FlowStats record (one flow, one host, one interval; time = the
interval's start, the latency windows' time, so the two join on flow and time):

* ``latscope_flow_stats`` — tags ``flow host``; fields: app/device bytes and segments,
  throughputs in bit/s (``app_tx_bps app_rx_bps dev_tx_bps dev_rx_bps``), ``retrans_segs``,
  ``retrans_rate`` (resent / transmitted segments).
* ``latscope_flow_socket`` — tags ``flow host side command``; fields: the socket's TCP
  state (``srtt_us cwnd ssthresh snd_wnd rcv_wnd delivery_rate busy_us rwnd_limited_us
  sndbuf_limited_us ...``) and its process's ``pid cpu_percent rss_bytes``.
* ``latscope_flow_drops`` — tags ``flow host reason`` (the kernel's skb_drop_reason name,
  e.g. ``QDISC_DROP``); fields ``packets bytes``, summed over the host's namespaces. A
  measurement of its own, not a field per reason on ``latscope_flow_stats``: the reasons
  are open-ended (the kernel adds them), and a tag can be grouped and filtered; written only
  for intervals with drops.
"""

from __future__ import annotations

from collections.abc import Mapping

from latscope.sinks.influx import _tags

M_FLOW_STATS = "latscope_flow_stats"
M_FLOW_SOCKET = "latscope_flow_socket"
M_FLOW_DROPS = "latscope_flow_drops"
_COUNTS = ("app_bytes_written", "app_writes", "app_bytes_read", "app_reads", "dev_bytes_tx",
           "dev_segs_tx", "dev_bytes_rx", "dev_segs_rx", "retrans_segs", "retrans_bytes")
_RATES = (("app_tx_bps", "app_bytes_written"), ("app_rx_bps", "app_bytes_read"),
          ("dev_tx_bps", "dev_bytes_tx"), ("dev_rx_bps", "dev_bytes_rx"))
_SOCKET_INTS = ("srtt_us", "rttvar_us", "min_rtt_us", "cwnd", "ssthresh", "mss", "snd_wnd",
                "rcv_wnd", "rcv_space", "pacing_rate", "delivery_rate", "busy_us",
                "rwnd_limited_us", "sndbuf_limited_us", "total_retrans", "unacked",
                "notsent_bytes", "pid", "rss_bytes")


def flow_stats_lines(rec: Mapping, flow: str, extra: Mapping[str, str] = {}) -> list[str]:
    """``flow``: the name the latency windows use for this flow (topology name or id)."""
    ts = rec["interval_start_ns"]
    tags = {"flow": flow, "host": rec["host"], **extra}
    fields = [f"{k}={int(rec[k])}i" for k in _COUNTS]
    secs = max(rec["duration_ns"], 1) / 1e9
    fields += [f"{name}={rec[k] * 8 / secs}" for name, k in _RATES]
    if rec["dev_segs_tx"]:
        fields.append(f"retrans_rate={rec['retrans_segs'] / rec['dev_segs_tx']}")
    out = [f"{M_FLOW_STATS}{_tags(tags)} {','.join(fields)} {ts}"]
    for s in rec["sockets"]:
        st = {**tags, "side": s["side"], "command": s.get("command") or ""}
        f = [f"{k}={int(s[k])}i" for k in _SOCKET_INTS if s.get(k) is not None]
        if s.get("cpu_percent") is not None:
            f.append(f"cpu_percent={float(s['cpu_percent'])}")
        out.append(f"{M_FLOW_SOCKET}{_tags(st)} {','.join(f)} {ts}")
    # one point per reason: two namespaces of a host with the same tags would overwrite
    drops: dict[str, list[int]] = {}
    for d in rec.get("drops", ()):
        c = drops.setdefault(d["reason"], [0, 0])
        c[0] += d["packets"]
        c[1] += d["bytes"]
    for reason, (packets, nbytes) in sorted(drops.items()):
        dt = {**tags, "reason": reason}
        out.append(f"{M_FLOW_DROPS}{_tags(dt)} packets={packets}i,bytes={nbytes}i {ts}")
    return out
