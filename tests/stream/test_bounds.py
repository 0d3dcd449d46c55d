"""100k distinct flows through the worker's pipeline code and the InfluxDB sink's line
builders: everything kept per flow or per series stays within its bound, the evictions are
counted, and the process's memory stays within a stated limit."""

from __future__ import annotations

import time
from pathlib import Path

from latscope.bpf.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.schemas import codec
from latscope.settings import flow_resolver
from latscope.sinks import influx
from latscope.stream import segments
from latscope.stream.bounded import OTHER
from latscope.stream.join import JoinPolicy
from latscope.stream.pipeline import PENDING, STATS, Pipeline
from latscope.stream.settings import StreamSettings
from latscope.stream.synthetic import PathSpec, sample_records
from latscope.stream.windows import WindowPolicy

FLOWS = 100_000
BATCH = 2_000          # samples a batch (4000 records, one message each)
# What the run may add to the process's peak RSS: bounded it added ~70 MB; with the LRU
# maps and the flow tags unbounded (one series per connection) it added 2.7 GB.
RSS_LIMIT_MB = 300


class Lines:
    """The sink: every sample and window turned into its InfluxDB line (the sink's own
    caches fill as in production), then let go; counts kept."""

    def __init__(self) -> None:
        self.lines = 0
        self.flows: set[str] = set()

    def write_samples(self, samples: list) -> None:
        for _, bd, flow, wall in samples:
            influx.sample_line(bd, flow, wall, {"run": "lsxf"})
            self.flows.add(flow)
        self.lines += len(samples)

    def write_windows(self, windows: list) -> None:
        for tags, sk, start, pos in windows:
            influx.window_line(tags, sk, start, {"run": "lsxf"}, pos)
        self.lines += len(windows)

    def publish(self, topic: str, key: object, value: object, headers: object = None) -> None:
        pass


def _flow(i: int) -> dict:
    """Flow i: a connection of its own from h1 to an undeclared port on c1 (10.2.0.2)."""
    return {"proto": "tcp", "family": 4, "src": f"10.1.{i // 60000}.1", "dst": "10.2.0.2",
            "sport": 1024 + i % 60000, "dport": 7777}


def _rss_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (the peak since the last reset) of this process, in MB."""
    line = next(x for x in Path("/proc/self/status").read_text().splitlines()
                if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024


def _reset_peak_rss() -> None:
    """The peak so far is the suite's, not this test's: start it again at the current RSS
    (proc(5), clear_refs: 5)."""
    Path("/proc/self/clear_refs").write_text("5")


def test_100k_flows_keep_every_structure_bounded(fault_row) -> None:
    s = StreamSettings(flows=flow_resolver(REPO_ROOT / "topologies/default.yaml"),
                       join=JoinPolicy(0.3, 0.1), windows=WindowPolicy(0.5, 2.0),
                       max_pending=3_000, max_open_windows=150, max_series=100,
                       flow_tags_per_pair=16)
    out = Lines()
    p = Pipeline(s, {PENDING: {}, STATS: {}}, out, out)   # type: ignore[arg-type]
    _reset_peak_rss()
    before = _rss_mb("VmRSS")
    peak = {"pending": 0, "stats": 0}
    for start in range(0, FLOWS, BATCH):
        msgs = []
        t0 = monotonic_ns() - start * 1000   # samples of now: their windows are open
        for i in range(start, start + BATCH):
            # h1 and h2 of the 3-host path; the flow is undeclared, so samples close only
            # by their window (or by the pending bound)
            spec = PathSpec(["h1", "h2", "c1"], flow=_flow(i))
            for r in sample_records(spec, 72400, t0 + i * 1000)[:2]:
                msgs.append((i % 4, None, codec.encode("LayerEvent", r), time.time()))
        p.on_batch(msgs)
        peak["pending"] = max(peak["pending"], len(p.pending))
        peak["stats"] = max(peak["stats"], len(p.stats))
        p.on_tick(time.time())
    time.sleep(0.5)
    p.on_tick(time.time() + 5)
    c = p.all_counters()
    grown = _rss_mb("VmHWM") - before
    print(f"peak RSS +{grown:.0f} MB, counters {c}")
    fault_row("100k distinct flows through the worker", offered=FLOWS, joined=c["published"],
              lost=FLOWS - c["published"], limits={"peak RSS growth MB": (round(grown),
                                                                           RSS_LIMIT_MB)},
              detail={k: v for k, v in c.items() if "evict" in k or "overflow" in k})
    assert grown < RSS_LIMIT_MB, f"peak RSS grew {grown:.0f} MB"
    assert c["records"] == 2 * FLOWS and c["published"] == FLOWS
    assert peak["pending"] <= s.max_pending and peak["stats"] <= s.max_open_windows
    assert len(p.totals) <= s.max_series and len(p.last_closed) <= s.max_series
    pairs, tagged = p.flow_tags.sizes()
    # two host pairs: 10.1.0.1 is h1's, routed to c1 by the topology; 10.1.1.1 is no
    # topology address, so its flows' path is only what the records show (h1 to h2)
    assert pairs == 2 and tagged <= s.flow_tags_per_pair * 2
    assert out.flows <= {OTHER} | {f"tcp:{f['src']}:{f['sport']}>10.2.0.2:7777"
                                   for f in map(_flow, range(FLOWS))}
    assert OTHER in out.flows and len(out.flows) <= s.flow_tags_per_pair * 2 + 1
    assert c["flow_tags_other"] > FLOWS // 2
    assert c["window_samples"] > FLOWS * 0.9   # the samples were folded into windows
    assert min(c["join_evicted"], c["windows_evicted"], c["series_evicted"]) > 0
    assert len(p.joiner._closed) <= 200_000
    # the caches under the pipeline and the sink are bounded by clearing
    assert len(p.resolver._cache) <= 100_001
    assert len(segments._SHAPES) <= segments._CACHE_MAX + 1
    assert len(influx._SAMPLE_HEADS) <= influx._CACHE_MAX + 1
