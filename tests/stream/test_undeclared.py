"""Flows no topology declares (issue #11), resent copies, and statistics windows that close
on the event-time watermark: the pipeline driven without a broker, on hand-made records.

Truth here is the synthetic generator's injected per-point step (end-to-end = steps x step),
the hosts a record set was built with, and the arrival times the test hands over."""

from __future__ import annotations

import time

from latscope.bpf.clock import monotonic_ns
from latscope.schemas import codec
from latscope.stream.flows import FlowResolver
from latscope.stream.pipeline import PENDING, RESENT, STATS, Pipeline
from latscope.stream.settings import StreamSettings
from latscope.stream.synthetic import PathSpec, clock_model, sample_records
from latscope.stream.windows import E2E

STEP_NS = 7_000
# sender 6 points, forwarder 5, receiver 5: 15 steps end to end
E2E_NS = 15 * STEP_NS
FWD = PathSpec(["h1", "r1", "h2"], step_ns=STEP_NS, flow={
    "proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2", "sport": 40000,
    "dport": 7000})
REV = PathSpec(["h2", "r1", "h1"], step_ns=STEP_NS, flow={
    "proto": "tcp", "family": 4, "src": "10.2.0.2", "dst": "10.1.0.1", "sport": 7000,
    "dport": 40000})


class Kept:
    def __init__(self) -> None:
        self.published: list[dict] = []
        self.windows: list = []

    def publish(self, topic: str, key: bytes | None, value: bytes | None,
                headers: dict[str, bytes] | None = None) -> None:
        if value is not None and topic.endswith("breakdowns"):
            self.published.append(codec.decode(value, expect="Breakdown")[1])

    def write_samples(self, samples: list) -> None:
        pass

    def write_windows(self, windows: list) -> None:
        self.windows += windows


def pipeline(**kw: object) -> tuple[Pipeline, Kept]:
    """No topology: every flow is undeclared."""
    kept = Kept()
    p = Pipeline(StreamSettings(flows=FlowResolver(), manager="mgr", **kw),  # type: ignore[arg-type]
                 {PENDING: {}, STATS: {}}, kept, kept)
    for h in ("h1", "r1", "h2"):
        p.on_clock(h.encode(), codec.encode("ClockModel", clock_model(h, 0)))
    return p, kept


def msg(recs: list[dict], arrival: float, partition: int = 0) -> list:
    return [(partition, r["flow_id"].encode(), codec.encode("LayerEvent", r), arrival)
            for r in recs]


def test_undeclared_flows_close_once_their_learned_hosts_reported() -> None:
    """Both directions through a forwarder, no topology. The first sample of each address
    pair closes by its join window (nothing known yet); from then on a sample closes the
    moment its last host's record is read, waits while one host (the forwarder) is still
    missing, and a new connection between the same addresses (another port) needs no
    learning of its own."""
    p, kept = pipeline()
    t0 = monotonic_ns()
    now = time.time()
    for spec in (FWD, REV):
        p.on_batch(msg(sample_records(spec, 0, t0), now - 1.0))
    waiting = {r["host"]: r for r in sample_records(FWD, 32, t0 + 500)}
    p.on_batch(msg([waiting["h1"], waiting["h2"]], now + 0.5))   # r1's still to come
    assert len(p.pending) == 3 and kept.published == []
    # the newest arrival is the first two samples' join window (1.0 + 0.5) after them
    p.on_tick(now + 1.6, backlogged={0})
    assert len(kept.published) == 2 and p.joiner.counters.by_window == 2
    p.on_batch(msg([waiting["r1"]], now + 1.6))   # closes at once: its path is known now
    assert len(kept.published) == 3 and p.joiner.counters.by_window == 2
    kept.published.pop()
    assert p.counters.paths_learned == 2
    assert p.resolver.learned() == {"10.1.0.1→10.2.0.2": ["h1", "r1", "h2"],
                                    "10.2.0.2→10.1.0.1": ["h2", "r1", "h1"]}
    other_port = PathSpec(FWD.hosts, STEP_NS, flow={**FWD.flow_key(), "sport": 40001})
    for i, spec in enumerate((FWD, REV, other_port), start=1):
        recs = {r["host"]: r for r in sample_records(spec, i * 64, t0 + i * 1000)}
        sender, receiver = spec.hosts[0], spec.hosts[-1]
        p.on_batch(msg([recs[sender], recs[receiver]], now + 1.7))
        assert len(kept.published) == i + 1, "closed before the forwarder reported"
        p.on_batch(msg([recs["r1"]], now + 1.7))
        assert len(kept.published) == i + 2, "still waiting though every host reported"
    assert p.joiner.counters.by_window == 2
    for bd in kept.published:
        assert bd["complete"] and bd["end_to_end_ns"] == E2E_NS, bd
        assert bd["missing_hosts"] == [] and len(bd["hosts"]) == 3


def test_a_late_record_from_a_host_off_the_learned_path_extends_it() -> None:
    """The first sample lost its forwarder's record (the path learned lacks r1); r1's
    record comes after the sample closed: late, counted, and r1 joins the path, so the next
    sample waits for it."""
    p, kept = pipeline()
    t0, now = monotonic_ns(), time.time()
    first = {r["host"]: r for r in sample_records(FWD, 0, t0)}
    p.on_batch(msg([first["h1"], first["h2"]], now))
    p.on_tick(now + 1.6)
    assert p.resolver.learned() == {"10.1.0.1→10.2.0.2": ["h1", "h2"]}
    p.on_batch(msg([first["r1"]], now + 1.7))
    assert p.joiner.counters.late == 1
    assert p.resolver.learned() == {"10.1.0.1→10.2.0.2": ["h1", "r1", "h2"]}
    nxt = {r["host"]: r for r in sample_records(FWD, 64, t0 + 1000)}
    p.on_batch(msg([nxt["h1"], nxt["h2"]], now + 1.8))
    assert len(kept.published) == 1
    p.on_batch(msg([nxt["r1"]], now + 1.8))
    assert len(kept.published) == 2 and kept.published[1]["end_to_end_ns"] == E2E_NS


def test_resent_copies_are_never_joined_with_unflagged_ones() -> None:
    """A byte's original got only through the sender (unflagged there: it completed there
    before the resend); its resend crossed every host, flagged on each. Two samples: the
    original, missing r1 and h2 (incomplete), and the resend, whole, flagged, its durations
    the resend's own (its timestamps 300 µs later, the step the same), its statistics
    apart under the flow's name + RESENT."""
    p, kept = pipeline(filter_retrans=False)
    t0, now = monotonic_ns(), time.time()
    orig = {r["host"]: r for r in sample_records(FWD, 0, t0)}
    resend = [{**r, "retrans": True} for r in sample_records(FWD, 0, t0 + 300_000)]
    p.on_batch(msg([orig["h1"], *resend], now))
    p.on_tick(now + 1.6)
    by_flag = {bd["retrans"]: bd for bd in kept.published}
    assert len(kept.published) == 2 and set(by_flag) == {False, True}
    assert by_flag[False]["hosts"] == ["h1"] and not by_flag[False]["complete"]
    assert by_flag[True]["complete"] and by_flag[True]["end_to_end_ns"] == E2E_NS
    assert by_flag[True]["ts_ns"] == t0 + 300_000
    c = p.all_counters()
    assert (c["resent"], c["resent_dropped"], c["join_resent"]) == (1, 0, 3)
    flows = {w["tags"]["flow"] for w in p.stats.values() if w["tags"]["segment"] == E2E}
    assert flows == {kept.published[0]["flow_id"] + RESENT}


def test_filter_retrans_drops_resent_breakdowns_counted() -> None:
    p, kept = pipeline(filter_retrans=True)
    t0, now = monotonic_ns(), time.time()
    resend = [{**r, "retrans": True} for r in sample_records(FWD, 0, t0)]
    p.on_batch(msg(resend, now))
    p.on_tick(now + 1.6)
    c = p.all_counters()
    assert kept.published == [] and (c["resent"], c["resent_dropped"]) == (1, 1)
    assert p.stats == {}


def test_windows_wait_for_a_lagging_worker_no_sample_late() -> None:
    """Default settings. Samples of two undeclared flows (the first of each closing by the
    join window, on the arrival watermark; the rest at once, their paths learned) happened
    12 s ago over 4 s; their records reached Kafka
    0.3 s after each sample, and the worker reads them only now, 0.5 s of arrivals a
    batch, ticking after each (its partition backlogged until the last). A window closed on
    wall time would have taken none of them; on the watermark none is late, and every
    complete sample is in the statistics once the partition is quiet."""
    p, kept = pipeline()
    ago_ns = 12 * 10**9
    t_ref0 = monotonic_ns() - ago_ns
    wall0 = time.time() - ago_ns / 1e9
    n = 80   # 20 a second, both flows
    batches: dict[int, list] = {}
    for i in range(n):
        offset_ns = i * 50_000_000
        spec = FWD if i % 2 else REV
        arrival = wall0 + offset_ns / 1e9 + 0.3
        for r in sample_records(spec, (i + 1) * 64, t_ref0 + offset_ns):
            batches.setdefault(int((arrival - wall0) / 0.5), []).extend(msg([r], arrival))
    order = sorted(batches)
    for b in order:
        p.on_batch(batches[b])
        p.on_tick(time.time(), backlogged=set() if b == order[-1] else {0})
    quiet = time.time()
    for dt in (1.6, 3.2, 5.0):   # the partition read to its end: its samples, then windows
        p.on_tick(quiet + dt)
    c = p.all_counters()
    complete = sum(bd["complete"] for bd in kept.published)
    assert complete == n and c["window_late"] == 0, c
    # only each pair's first sample closed by its window; the others read meanwhile (or
    # due at the same tick) closed when it taught their path
    assert c["paths_learned"] == 2 and c["join_by_window"] == 2, c
    counted = sum(sk.count for key, sk in p.totals.items() if key[3] == E2E)
    assert counted == complete and c["open_windows"] == 0
