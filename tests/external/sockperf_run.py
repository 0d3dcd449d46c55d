"""sockperf ping-pong inside a running pipeline, and LatScope's figures for the same messages.

sockperf's own report is the reference: its summary (avg-latency and percentile 50.000 are
RTT/2 unless --full-rtt) and its --full-log (per message: client tx and rx on
CLOCK_MONOTONIC, with --no-rdtsc, and latency = RTT/2). LatScope's side is read from the
breakdowns topic as any consumer would (``latscope.schemas.codec.decode``).

Why LatScope's (forward + reverse)/2 sits just below sockperf's RTT/2: per message,
forward + reverse = (h1:sock_recv - h1:sock_send) - (h2:sock_send - h2:sock_recv), two
differences each taken on one host's clock, so every clock error cancels in the sum; and
sockperf's RTT adds its server's turnaround (``Paired.turnaround``) and its client's clock
reads and syscall edges (``Paired.client_edges``). A one-way delay, on the other hand,
carries the whole clock correction: that is where a wrong clock shows.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import re
import statistics
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope import kafka
from latscope.lab.demo import DemoOptions, Pipeline, pipeline
from latscope.procs import free_port
from latscope.schemas import codec
from latscope.sinks.influx_writer import delete_run
from latscope.sinks.settings import InfluxSettings
from latscope.stream.kafkaio import consume

TOPOLOGY = Path(__file__).with_name("sockperf.yaml")
# test_sockperf's namespaces, links and topics (conftest.py sweeps them after the session)
PREFIX = "lsxs" + os.environ["LSX_RUN_ID"]
MSG_SIZE = 64          # sockperf -m; the topology samples every 64th byte: one per message
MPS = 1000             # sockperf --mps (ping-pong paces itself to about 500 round trips/s)
LOAD_PORT = 5201       # iperf3: not on the sampling allow-list

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


@dataclass(frozen=True)
class Scenario:
    """One sockperf run: its server port, its client port (fixed with --client_port, or
    None: the kernel's ephemeral pick), and whether iperf3 loads the path meanwhile."""
    name: str
    port: int
    client_port: int | None
    load: bool


@dataclass
class SockperfReport:
    """sockperf's own figures (µs, RTT/2) and its per-message log."""
    mean_us: float
    std_us: float
    median_us: float
    min_us: float
    max_us: float
    observations: int
    messages: list[tuple[int, int, float]] = field(default_factory=list)  # tx ns, rx ns, RTT/2 µs
    text: str = ""

    @property
    def window_ns(self) -> tuple[int, int]:
        return self.messages[0][0], self.messages[-1][1]


def parse_report(text: str, full_log: str) -> SockperfReport:
    """The summary sockperf prints, and its --full-log CSV (``packet, txTime(sec),
    rxTime(sec), latency(usec)`` rows after the header)."""
    t = _ANSI.sub("", text)

    def num(pattern: str) -> float:
        m = re.search(pattern, t)
        if not m:
            raise ValueError(f"sockperf report without {pattern!r}:\n{t[-2000:]}")
        return float(m.group(1))

    msgs = []
    rows = False
    for line in full_log.splitlines():
        if line.startswith("packet, txTime"):
            rows = True
            continue
        parts = line.split(",")
        if rows and len(parts) == 4 and parts[0].strip().isdigit():
            tx, rx = (round(float(p) * 1e9) for p in parts[1:3])   # ns-exact: 9 decimals
            msgs.append((tx, rx, float(parts[3])))
    return SockperfReport(
        mean_us=num(r"avg-latency=\s*([0-9.]+)"), std_us=num(r"std-dev=\s*([0-9.]+)"),
        median_us=num(r"percentile 50\.000 =\s*([0-9.]+)"),
        min_us=num(r"<MIN> observation =\s*([0-9.]+)"),
        max_us=num(r"<MAX> observation =\s*([0-9.]+)"),
        observations=int(num(r"Total (\d+) observations")), messages=msgs, text=t)


def run_sockperf(p: Pipeline, sc: Scenario, out_dir: Path, duration_s: float,
                 client: str = "h1", server: str = "h2") -> SockperfReport:
    """sockperf TCP ping-pong client → server for ``duration_s``; with ``sc.load`` an iperf3
    bulk flow runs client → server on the same veth from 1 s before until after it. Every
    process is started with ``Net.popen``, so the namespace teardown stops what a failure
    leaves running."""
    dst = p.net.addr(server)
    srv = p.net.popen(server, ["sockperf", "server", "--tcp", "-i", dst, "-p", str(sc.port)],
                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs: list[subprocess.Popen] = [srv]
    try:
        p.net.wait_listening(server, sc.port, srv)
        if sc.load:
            procs.append(p.net.popen(server, ["iperf3", "-s", "-1", "-p", str(LOAD_PORT)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            p.net.wait_listening(server, LOAD_PORT, procs[-1])
            procs.append(p.net.popen(client, ["iperf3", "-c", dst, "-p", str(LOAD_PORT), "-t",
                                              str(int(duration_s + 3))],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            time.sleep(1.0)
        full_log = out_dir / f"sockperf-{sc.name}.csv"
        fixed = [] if sc.client_port is None else ["--client_port", str(sc.client_port)]
        # --no-rdtsc: CLOCK_MONOTONIC (the probes' clock) instead of a calibrated TSC
        cl = p.net.popen(client, ["sockperf", "ping-pong", "--tcp", "-i", dst,
                                  "-p", str(sc.port), *fixed, "-m", str(MSG_SIZE),
                                  "--mps", str(MPS), "-t", str(int(duration_s)),
                                  "--no-rdtsc", "--full-log", str(full_log)],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        out, _ = cl.communicate(timeout=duration_s + 60)
        if cl.returncode != 0:
            raise RuntimeError(f"sockperf ping-pong exited {cl.returncode}:\n{out[-2000:]}")
        (out_dir / f"sockperf-{sc.name}.txt").write_text(out)
        return parse_report(out, full_log.read_text())
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def breakdowns(bootstrap: str, summary: dict, timeout: float = 90) -> list[dict]:
    """Every breakdown the run's worker published, decoded as a plain consumer does."""
    n = summary["worker"]["counters"]["published"]
    return [codec.decode(m.value(), expect="Breakdown")[1] for m in consume(
        bootstrap, summary["topics"]["breakdowns"], lambda ms: len(ms) >= n, timeout)]


@dataclass
class Direction:
    """LatScope's corrected end-to-end delays (µs) of one direction's complete samples, in
    the order of their first point on the reference clock."""
    e2e_us: list[float]
    bound_us: list[float]     # each sample's summed sync error bound (its segments')
    ts_ns: list[int]          # each sample's first point on the reference clock

    @property
    def mean_us(self) -> float:
        return statistics.fmean(self.e2e_us)

    @property
    def median_us(self) -> float:
        return statistics.median(self.e2e_us)

    def at(self, tx_ns: int, rx_ns: int) -> int | None:
        """The sample a message sent at ``tx_ns`` and answered at ``rx_ns`` carried: the
        first one whose first point lies between the two (one sample per message)."""
        i = bisect.bisect_left(self.ts_ns, tx_ns - 2_000)   # 2 µs: sync error margin
        return i if i < len(self.ts_ns) and self.ts_ns[i] <= rx_ns else None


def direction(bds: list[dict], sport: int, dport: int, window_ns: tuple[int, int]) -> Direction:
    """The complete samples of flow ``sport → dport`` whose first point lies in sockperf's
    valid window (its warm-up and the messages before it are not in its statistics)."""
    lo, hi = window_ns
    sel = sorted((b for b in bds if b["flow"]["sport"] == sport and b["flow"]["dport"] == dport
                  and b["complete"] and lo - 50_000 <= b["ts_ns"] <= hi),
                 key=lambda b: b["ts_ns"])
    return Direction([b["end_to_end_ns"] / 1000 for b in sel],
                     [sum(g["error_bound_ns"] for g in b["segments"]) / 1000 for b in sel],
                     [b["ts_ns"] for b in sel])


def compare(bds: list[dict], sc: Scenario, report: SockperfReport) -> Comparison:
    """LatScope's two directions of a scenario's connection against sockperf's report."""
    cport = sc.client_port
    if cport is None:   # the ephemeral port the kernel picked: the ping flow's source
        (cport,) = {b["flow"]["sport"] for b in bds if b["flow"]["dport"] == sc.port}
    return Comparison(sc.name, report, direction(bds, cport, sc.port, report.window_ns),
                      direction(bds, sc.port, cport, report.window_ns))


@dataclass(frozen=True)
class Paired:
    """One sockperf message with the LatScope samples of its ping and its pong (µs)."""
    half_rtt: float           # sockperf's latency (RTT/2) of the message
    fwd: float
    rev: float
    fwd_bound: float
    rev_bound: float
    turnaround: float         # sockperf server, h2:sock_recv → h2:sock_send (one clock)

    @property
    def client_edges(self) -> float:
        """The part of sockperf's RTT no probe sees: the client's clock reads and syscall
        edges around h1:sock_send and h1:sock_recv."""
        return 2 * self.half_rtt - (self.fwd + self.turnaround + self.rev)

    @property
    def excess(self) -> float:
        """LatScope's (fwd + rev)/2 minus sockperf's RTT/2: ≤ 0 up to timestamp noise,
        since sockperf adds its own turnaround and syscall edges."""
        return (self.fwd + self.rev) / 2 - self.half_rtt


@dataclass
class Comparison:
    """LatScope (forward + reverse)/2 against sockperf's RTT/2 for one scenario."""
    name: str
    sockperf: SockperfReport
    fwd: Direction
    rev: Direction

    @property
    def mean_us(self) -> float:
        """(mean forward + mean reverse)/2 = the mean of the per-message (fwd + rev)/2."""
        return (self.fwd.mean_us + self.rev.mean_us) / 2

    @property
    def composite_median_us(self) -> float:
        """(median forward + median reverse)/2: medians do not add, so with skewed and
        weakly correlated directions this reads below the median of the sums."""
        return (self.fwd.median_us + self.rev.median_us) / 2

    def paired(self) -> list[Paired]:
        out = []
        for tx, rx, lat in self.sockperf.messages:
            i, j = self.fwd.at(tx, rx), self.rev.at(tx, rx)
            if i is not None and j is not None:
                served = self.fwd.ts_ns[i] + self.fwd.e2e_us[i] * 1000   # ping's sock_recv
                out.append(Paired(lat, self.fwd.e2e_us[i], self.rev.e2e_us[j],
                                  self.fwd.bound_us[i], self.rev.bound_us[j],
                                  (self.rev.ts_ns[j] - served) / 1000))
        return out

    @property
    def median_us(self) -> float:
        """The median over sockperf's messages of LatScope's (fwd + rev)/2: what sockperf's
        own median (of RTT/2 per message) is the counterpart of."""
        return statistics.median((p.fwd + p.rev) / 2 for p in self.paired())

    def figures(self) -> dict[str, Any]:
        s, pairs = self.sockperf, self.paired()
        ex = [p.excess for p in pairs]
        q = statistics.quantiles(ex, n=100) if len(ex) > 100 else [float("nan")] * 99

        def dist(xs: list[float]) -> dict[str, float]:
            return {"median": round(statistics.median(xs), 3),
                    "mean": round(statistics.fmean(xs), 3)} if xs else {}

        def one(d: Direction) -> dict[str, Any]:
            return {"n": len(d.e2e_us), "mean_us": round(d.mean_us, 3),
                    "median_us": round(d.median_us, 3), "min_us": round(min(d.e2e_us), 3)}

        return {
            "scenario": self.name,
            "sockperf": {"mean_us": s.mean_us, "median_us": s.median_us, "std_us": s.std_us,
                         "min_us": s.min_us, "max_us": s.max_us, "n": s.observations},
            "latscope": {"mean_us": round(self.mean_us, 3), "median_us": round(self.median_us, 3),
                         "composite_median_us": round(self.composite_median_us, 3),
                         "paired": len(pairs), "fwd": one(self.fwd), "rev": one(self.rev)},
            "mean_ratio": round(self.mean_us / s.mean_us, 4),
            "median_diff_us": round(self.median_us - s.median_us, 3),
            "composite_median_diff_us": round(self.composite_median_us - s.median_us, 3),
            "per_message_excess_us": {"p1": round(q[0], 3), "p50": round(q[49], 3),
                                      "p99": round(q[98], 3),
                                      "max": round(max(ex), 3) if ex else None},
            # sockperf's share of each round trip that (fwd + rev)/2 leaves out, per message
            "server_turnaround_us": dist([p.turnaround for p in pairs]),
            "client_edges_us": dist([p.client_edges for p in pairs]),
        }


@contextlib.contextmanager
def session(stack: Any, out: Path, topology: Path, prefix: str,
            scenarios: Mapping[Scenario, float], worker_topology: bool = True,
            tag_prefix: str = PREFIX) -> Iterator[dict]:
    """One pipeline on ``topology``, each scenario run for its seconds one after the other;
    yields the summary, the comparisons and their figures, every breakdown, the worker's
    flows view and where its InfluxDB points are. The run's topics and points go after
    (``tag_prefix``: their names' start, a run id's letter)."""
    tag = f"{tag_prefix}-{uuid.uuid4().hex[:8]}"
    opts = DemoOptions(topology=topology, prefix=prefix, topic_prefix=tag,
                       web_port=free_port(), start_stack=False, run_id=tag,
                       worker_topology=worker_topology)
    influx = InfluxSettings(stack.influx_url, stack.influx_org, stack.influx_bucket,
                            stack.influx_token)
    try:
        started = time.monotonic()
        with pipeline(opts) as p:
            assert not p.missing, p.missing
            reports = {sc.name: run_sockperf(p, sc, out, secs) for sc, secs in scenarios.items()}
            summary = p.finish(time.monotonic() - started)
            flows_view = p.worker.flows()
            worker_summary = p.worker.summary()
        assert not summary.get("missing"), summary.get("missing")
        bds = breakdowns(stack.kafka_bootstrap, summary)
        comps = {sc.name: compare(bds, sc, reports[sc.name]) for sc in scenarios}
        figures = {n: c.figures() for n, c in comps.items()}
        figures |= {"clock": summary["clock"], "counters": summary["counters"],
                    "worker_counters": summary["worker"]["counters"],
                    "learned_paths": worker_summary.get("learned_paths"),
                    "statistics": statistics_counts(flows_view)}
        (out / "figures.json").write_text(json.dumps(figures, indent=1))
        print(f"\nsockperf agreement ({out}):\n{json.dumps(figures, indent=1)}")
        yield {"summary": summary, "comparisons": comps, "figures": figures,
               "breakdowns": bds, "flows_view": flows_view, "worker": worker_summary,
               "influx": influx, "run_id": opts.run_id}
    finally:
        kafka.delete_topics_with_prefix(stack.kafka_bootstrap, f"{opts.topic_prefix}.")
        delete_run(influx, opts.run_id)


def statistics_counts(flows_view: dict) -> dict[str, int]:
    """Each flow's end-to-end sample count over every closed window (/latscope/flows)."""
    return {f["flow"]: f.get("end_to_end", {}).get("total", {}).get("count", 0)
            for f in flows_view.get("flows", [])}


def complete_by_flow(bds: list[dict], name: Callable[[dict], str]) -> dict[str, int]:
    """Complete, unflagged breakdowns per statistics name (``name`` of a breakdown)."""
    out: dict[str, int] = {}
    for b in bds:
        if b["complete"] and not b["retrans"]:
            out[name(b)] = out.get(name(b), 0) + 1
    return out


def influx_counts_when(influx: InfluxSettings, run_id: str, want: dict[str, int],
                       timeout: float = 60) -> dict[str, int]:
    """The run's per-flow end-to-end counts in InfluxDB (latscope_flow, field count, summed
    over its windows), read until they are ``want`` or the deadline (the sink batches)."""
    from influxdb_client import InfluxDBClient

    flux = f'''from(bucket: "{influx.bucket}") |> range(start: -2h)
      |> filter(fn: (r) => r._measurement == "latscope_flow" and r.run == "{run_id}"
                           and r._field == "count")
      |> group(columns: ["flow"]) |> sum()'''
    got: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    with InfluxDBClient(url=influx.url, token=influx.token, org=influx.org) as client:
        while time.monotonic() < deadline:
            got = {rec.values["flow"]: int(rec.get_value())
                   for t in client.query_api().query(flux) for rec in t.records}
            if got == want:
                break
            time.sleep(1)   # polling InfluxDB's answer, not waiting for it to happen
    return got
