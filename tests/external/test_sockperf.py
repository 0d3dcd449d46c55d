"""LatScope against sockperf (design §9: "sockperf RTT/2 within 5 %"), idle and under iperf3.

sockperf TCP ping-pong runs h1 → h2 between namespaces whose clocks carry injected offsets
(+5 ms / -3 ms) and drift (+20 / -15 ppm); every 64-byte message is sampled. sockperf's own
report is the reference: its RTT/2 mean and median (summary) and its per-message log.

What can be held to what (sockperf_run has the arithmetic):
* forward + reverse is a round trip taken on each host's own clock: blind to clock errors.
  Per message it can only sit below sockperf's RTT, by sockperf's own server turnaround and
  client syscall edges, which no socket-level probe sees. Measured on the shared 2-core VM
  (load average 3-13, ~500 round trips/s): never above on any of >100k messages (at most
  -0.69 µs), and below by 3.6-6.6 µs at the median (server turnaround 2.5-3.9 µs and
  client edges 3.6-5.5 µs per round trip, medians). That share alone exceeds the issue's
  3 µs at the median, and 5 % of any RTT/2 mean below ~100 µs: those two checks are
  expected failures here (the mean passes, 0.96-0.99, only because the machine's
  scheduling tails lift sockperf's mean to 120-650 µs against a ~30 µs median).
* the one-way delays carry the whole clock correction: none may be negative beyond its
  error bound, and each message's ping and pong must start between sockperf's own tx and
  rx of it. These fail at once with the correction or its drift term removed.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import PREFIX
from sockperf_run import Comparison, Scenario, breakdowns, compare, run_sockperf

from latscope import kafka
from latscope.lab.demo import DemoOptions, pipeline
from latscope.procs import free_port

pytestmark = [pytest.mark.root, pytest.mark.stack]

TOPOLOGY = Path(__file__).with_name("sockperf.yaml")
IDLE = Scenario("idle", 11111, 11112, load=False)
LOAD = Scenario("load", 11121, 11122, load=True)
EPH = Scenario("eph", 11131, None, load=False)       # reverse direction: no topology flow
DURATION_S = {"idle": 8, "load": 8, "eph": 4}        # ~3500 round trips in 8 s
MEAN_TOLERANCE = 0.05        # the 5 % of sockperf's RTT/2 mean
MEDIAN_TOLERANCE_US = 3.0    # the 3 µs at the median
NOISE_US = 0.5               # how far above sockperf LatScope may read (measured: never)
MIN_COVERAGE = 0.95          # sockperf's messages with their samples joined, per direction
SOCKPERF_SHARE = (
    "sockperf's own server turnaround and client syscall edges, which (fwd + rev)/2 leaves "
    "out, are 3.6-6.6 µs of RTT/2 at the median on the shared 2-core VM (figures: "
    "per_message_excess_us, server_turnaround_us, client_edges_us)")


@pytest.fixture(scope="module")
def run(stack, tools, sweep, tmp_path_factory) -> Iterator[dict]:
    """One pipeline, the scenarios one after the other (setup is most of the runtime).
    The run's topics go afterwards: five per run would pile up on the shared broker."""
    out = tmp_path_factory.mktemp("sockperf")
    tag = uuid.uuid4().hex[:8]
    opts = DemoOptions(topology=TOPOLOGY, prefix=PREFIX, topic_prefix=f"lsxs-{tag}",
                       web_port=free_port(), start_stack=False, run_id=f"lsxs-{tag}")
    try:
        started = time.monotonic()
        with pipeline(opts) as p:
            assert not p.missing, p.missing
            reports = {sc.name: run_sockperf(p, sc, out, DURATION_S[sc.name])
                       for sc in (IDLE, LOAD, EPH)}
            summary = p.finish(time.monotonic() - started)
            flows_view = p.worker.flows()
        assert not summary.get("missing"), summary.get("missing")
        bds = breakdowns(stack.kafka_bootstrap, summary)
        comps = {sc.name: compare(bds, sc, reports[sc.name]) for sc in (IDLE, LOAD, EPH)}
        figures = {n: c.figures() for n, c in comps.items()}
        figures |= {"clock": summary["clock"], "counters": summary["counters"],
                    "statistics": {f["flow"]: f.get("end_to_end", {}).get("total", {}).get("count")
                                   for f in flows_view.get("flows", [])}}
        (out / "figures.json").write_text(json.dumps(figures, indent=1))
        print(f"\nsockperf agreement ({out}):\n{json.dumps(figures, indent=1)}")
        eph_rev = [b for b in bds if b["flow"]["sport"] == EPH.port]
        yield {"summary": summary, "comparisons": comps, "figures": figures,
               "eph_rev": {b["flow_id"] for b in eph_rev},
               "eph_rev_complete": sum(b["complete"] for b in eph_rev)}
    finally:
        kafka.delete_topics_with_prefix(stack.kafka_bootstrap, f"{opts.topic_prefix}.")


@pytest.fixture(params=[IDLE.name, LOAD.name])
def comparison(request, run) -> tuple[Comparison, dict]:
    return run["comparisons"][request.param], run["figures"][request.param]


def test_every_message_sampled_and_joined_by_path(run) -> None:
    """Both directions of idle and load are topology flows (the client port is fixed), so
    their complete samples close when the path is complete, never by the join window:
    only eph's reverse direction, no topology flow, may close by window."""
    for comp in run["comparisons"].values():
        n = comp.sockperf.observations
        assert len(comp.sockperf.messages) == n
        for d in (comp.fwd, comp.rev):
            assert len(d.e2e_us) >= MIN_COVERAGE * n, (comp.name, len(d.e2e_us), n)
    c = run["summary"]["worker"]["counters"]
    assert c["join_by_window"] - c["incomplete"] <= run["eph_rev_complete"], c


def test_undeclared_reverse_direction_is_joined(run) -> None:
    """The reverse direction of an ephemeral client port is no topology flow: its samples
    still join, complete, in the breakdowns (by the join window)."""
    comp = run["comparisons"][EPH.name]
    assert len(comp.rev.e2e_us) >= MIN_COVERAGE * comp.sockperf.observations, \
        run["figures"][EPH.name]


@pytest.mark.xfail(strict=True, reason="issue #11: a flow that is no topology flow (here the "
                   "reverse direction of an ephemeral client port) closes by the join window "
                   "only, 1.5 s after its first record, and then misses many statistics "
                   "windows: measured 1369 of its 2001 samples counted there (409 of 3999 "
                   "with the worker lagging), against all of its forward direction's (2906)")
def test_undeclared_reverse_direction_reaches_the_statistics(run) -> None:
    stats = run["figures"]["statistics"]
    fwd = stats.get("ping-eph") or 0
    rev = sum(stats.get(fid) or 0 for fid in run["eph_rev"])
    assert rev >= 0.95 * fwd, (rev, fwd, run["eph_rev_complete"])


def test_samples_line_up_with_sockperf_messages(comparison) -> None:
    """Each message's ping and pong samples start, on the reference clock, between
    sockperf's own tx and rx of it (CLOCK_MONOTONIC: the manager's clock here), so the
    corrected timestamps agree with sockperf's to within its round trip."""
    comp, fig = comparison
    n = comp.sockperf.observations
    assert len(comp.paired()) >= MIN_COVERAGE * n, (len(comp.paired()), n, fig)


def test_never_above_sockperf_beyond_noise(comparison) -> None:
    comp, fig = comparison
    assert comp.mean_us <= comp.sockperf.mean_us + NOISE_US, fig
    assert comp.median_us <= comp.sockperf.median_us + NOISE_US, fig
    worst = max(comp.paired(), key=lambda p: p.excess)
    assert worst.excess <= NOISE_US, (worst, fig)


def test_one_way_delays_respect_causality(comparison) -> None:
    """Where the clock correction shows: an offset or drift error e moves every forward
    delay by +e and every reverse one by -e; the round trip above cannot see it. (With the
    round trip never above sockperf's, no one-way delay exceeds its message's RTT either.)"""
    comp, fig = comparison
    for d in (comp.fwd, comp.rev):
        bad = [(e, b) for e, b in zip(d.e2e_us, d.bound_us, strict=True) if e < -b]
        assert not bad, (len(bad), len(d.e2e_us), bad[:3], fig)


@pytest.mark.xfail(strict=False, reason=SOCKPERF_SHARE)
def test_mean_within_5_percent_of_sockperf(comparison) -> None:
    comp, fig = comparison
    assert abs(comp.mean_us - comp.sockperf.mean_us) <= MEAN_TOLERANCE * comp.sockperf.mean_us, fig


@pytest.mark.xfail(strict=False, reason=SOCKPERF_SHARE)
def test_median_within_3us_of_sockperf(comparison) -> None:
    comp, fig = comparison
    assert abs(comp.median_us - comp.sockperf.median_us) <= MEDIAN_TOLERANCE_US, fig
