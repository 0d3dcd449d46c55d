"""The estimator alone: synthetic exchanges with a known clock, asymmetry and queueing."""

from __future__ import annotations

import random

import pytest

from latscope.bpf.clock import ClockInjection
from latscope.sync.estimator import Estimator, EstimatorConfig, Model, Sample, theil_sen


def exchange(inj: ClockInjection, t1: int, fwd: int, turn: int, back: int, pid: int) -> Sample:
    """One probe through a host with injected clock `inj`: one-way delays fwd/back (ns)."""
    t2 = inj.host_time(t1 + fwd)
    t3 = inj.host_time(t1 + fwd + turn)
    return Sample(pid, t1, t2, t3, t1 + fwd + turn + back)


def test_sample_arithmetic_is_signed() -> None:
    s = Sample(1, t1=1000, t2=6000, t3=6100, t4=1300)
    assert s.offset_ns == ((6000 - 1000) + (6100 - 1300)) / 2
    assert s.delay_ns == 300 - 100
    # t4 before t1 + turnaround: a negative delay stays negative.
    assert Sample(2, t1=1000, t2=1000, t3=2000, t4=1500).delay_ns == -500


def test_theil_sen_ignores_a_gross_outlier() -> None:
    xs = [float(i) for i in range(10)]
    ys = [3.0 + 2.0 * x for x in xs]
    ys[4] = 1e6
    slope, intercept, slope_err = theil_sen(xs, ys)
    assert slope == pytest.approx(2.0)
    assert intercept == pytest.approx(3.0)
    assert slope_err == pytest.approx(0.0)  # nine exact points: no doubt about the slope


@pytest.mark.parametrize("offset_ns,drift_ppm", [(5_000_000, 50.0), (-7_000_000, -50.0),
                                                 (250_000_000, 12.5)])
def test_tracks_offset_and_drift_through_queueing(offset_ns: int, drift_ppm: float) -> None:
    rng = random.Random(7)
    epoch = 10_000_000_000
    inj = ClockInjection(offset_ns, drift_ppm, epoch)
    est = Estimator(EstimatorConfig(window_ns=5_000_000_000, bucket_ns=200_000_000))
    t = epoch
    for pid in range(500):  # 10 s at 20 ms
        # 20 µs base each way with ±0.5 µs jitter; one probe in three hits a queue of up to
        # 2 ms on one side, which must not pull the estimate.
        fwd = 20_000 + rng.randint(-500, 500)
        back = 20_000 + rng.randint(-500, 500)
        if pid % 3 == 0:
            if rng.random() < 0.5:
                fwd += rng.randint(0, 2_000_000)
            else:
                back += rng.randint(0, 2_000_000)
        est.add(exchange(inj, t, fwd, 3_000, back, pid))
        t += 20_000_000
    m = est.fit()
    assert m is not None
    truth = inj.true_offset(m.ref_ns)
    assert abs(m.offset_ns - truth) <= m.error_bound_ns
    assert abs(m.offset_ns - truth) < 2_000
    assert m.drift_ppm == pytest.approx(drift_ppm, abs=0.5)
    # The half-delay bound dominates: about 40 µs / 2, plus a little drift allowance.
    assert 19_000 < m.error_bound_ns < 25_000
    assert m.negative_delays == 0
    assert m.consistent


def test_constant_asymmetry_stays_inside_the_bound() -> None:
    inj = ClockInjection(1_000_000, 0.0, 0)
    est = Estimator(EstimatorConfig(bucket_ns=10_000_000))
    for pid in range(50):
        est.add(exchange(inj, 10_000_000 * pid, 30_000, 1_000, 10_000, pid))
    m = est.fit()
    assert m is not None
    err = m.offset_ns - inj.true_offset(m.ref_ns)
    assert err == pytest.approx(10_000, abs=1)  # (30 - 10) µs / 2: invisible to any method
    assert abs(err) <= m.error_bound_ns


def test_needs_spread_in_time_before_fitting() -> None:
    est = Estimator(EstimatorConfig(bucket_ns=1_000_000_000, min_buckets=3))
    inj = ClockInjection(0, 0.0, 0)
    for pid in range(20):  # all within one bucket
        est.add(exchange(inj, 1_000 * pid, 10_000, 100, 10_000, pid))
    assert est.fit() is None


def test_window_slides() -> None:
    est = Estimator(EstimatorConfig(window_ns=1_000_000_000))
    inj = ClockInjection(0, 0.0, 0)
    for pid in range(300):
        est.add(exchange(inj, 10_000_000 * pid, 10_000, 100, 10_000, pid))
    assert len(est) == 101  # 1 s of 10 ms steps, both ends included


def _run(inj: ClockInjection, bad: dict[int, Sample] | None = None,
         fit_every: int = 5) -> tuple[Estimator, Model]:
    """2 s of clean 10 ms exchanges (10 µs each way, 1 µs turnaround), fitted every
    ``fit_every`` rounds as the manager does; ``bad[i]`` is added 5 ms after round i."""
    est = Estimator(EstimatorConfig(bucket_ns=10_000_000))
    epoch = 1_000_000_000
    for i in range(200):
        t1 = epoch + 10_000_000 * i
        est.add(exchange(inj, t1, 10_000, 1_000, 10_000, i))
        if bad and i in bad:
            est.add(bad[i])
        if fit_every and i % fit_every == 0:
            est.fit()
    m = est.fit()
    assert m is not None
    return est, m


# Impossible samples a broken or key-holding responder could send, 5 ms after round i:
# (i, t2 - t1 - offset, t3 - t2, t4 - t1), in ns on the true time axis.
IMPOSSIBLE = {
    # the host claims it received the probe 50 µs before it was sent; with a delay of only
    # 14 µs it would be the tightest sample of the window
    "negative_one_way": (-50_000, 1_000, 15_000),
    "t3_before_t2": (30_000, -1, 20_000),             # the reply left before the probe came
    "negative_delay": (10_000, 10_000_000, 21_000),   # issue #12: t3 - t2 = 10 ms
}


def _impossible(inj: ClockInjection, i: int, kind: str) -> Sample:
    fwd, turn, rtt = IMPOSSIBLE[kind]
    t1 = 1_000_000_000 + 10_000_000 * i + 5_000_000
    t2 = inj.host_time(t1) + fwd
    return Sample(10_000 + i, t1, t2, t2 + turn, t1 + rtt)


@pytest.mark.parametrize("fit_every", [5, 0], ids=["with-model", "first-fit"])
@pytest.mark.parametrize("kind", list(IMPOSSIBLE))
def test_impossible_samples_are_discarded_and_leave_the_model_unchanged(
        kind: str, fit_every: int) -> None:
    """The model, not a counter: with impossible samples mixed in (every third round from
    1 s on, as in the issue #12 experiment), offset, drift and bound are those of the clean
    run, and still hold the truth; each discarded sample is counted under its reason."""
    inj = ClockInjection(5_000_000, 20.0, 1_000_000_000)
    _clean, want = _run(inj, fit_every=fit_every)
    bad = {i: _impossible(inj, i, kind) for i in range(100, 200, 3)}
    est, got = _run(inj, bad, fit_every=fit_every)
    assert abs(got.offset_ns - inj.true_offset(got.ref_ns)) <= got.error_bound_ns
    assert (got.offset_ns, got.drift_ppm, got.error_bound_ns, got.consistent) == \
        pytest.approx((want.offset_ns, want.drift_ppm, want.error_bound_ns, want.consistent))
    assert est.suspicious == {r: len(bad) if r == kind else 0 for r in Estimator.REASONS}


def test_a_model_contradicting_every_sample_is_rebuilt() -> None:
    """A host whose clock really stepped: after max_rejected_in_a_row samples that all
    contradict the model, the estimator starts over instead of rejecting them forever."""
    est = Estimator(EstimatorConfig(bucket_ns=10_000_000, max_rejected_in_a_row=8))
    before, after = ClockInjection(0, 0.0, 0), ClockInjection(1_000_000, 0.0, 0)
    for i in range(100):
        est.add(exchange(before if i < 50 else after, 10_000_000 * i, 10_000, 1_000, 10_000, i))
        est.fit()
    m = est.fit()
    assert m is not None and est.restarts == 1
    assert abs(m.offset_ns - 1_000_000) <= m.error_bound_ns


def test_drift_interval_holds_the_truth_and_detects_contradictions() -> None:
    from latscope.sync.estimator import drift_interval

    xs = [0.0, 1e9, 2e9]
    truth = [100.0 + 20e-6 * x for x in xs]          # 20 ppm
    ys = [t + e for t, e in zip(truth, [400.0, -300.0, 250.0], strict=True)]
    lo, hi = drift_interval(xs, ys, [500.0] * 3)       # errors within the half delays
    assert lo <= 20e-6 <= hi
    assert hi - lo <= 2 * 1000 / 2e9 + 1e-12          # pinned by the widest pair
    # A sample 10 µs off with a 1 µs half delay cannot lie on any line with the others.
    assert drift_interval(xs, [truth[0], truth[1] + 10_000, truth[2]], [500.0] * 3) is None


def test_a_window_full_of_queueing_holds_the_last_good_model() -> None:
    """5 s of clean exchanges, then 3 s where every forward leg waits 200 µs in a standing
    queue: the fresh fit would be ~100 µs off; the held model stays within its bound."""
    inj = ClockInjection(5_000_000, 30.0, 0)
    est = Estimator(EstimatorConfig(window_ns=2_000_000_000, bucket_ns=20_000_000))
    t = 1_000_000_000
    models = []
    for pid in range(400):
        queued = pid >= 250
        est.add(exchange(inj, t, 20_000 + (200_000 if queued else 0), 2_000, 20_000, pid))
        m = est.fit()
        if m is not None and queued:
            models.append(m)
        t += 20_000_000
    assert models and any(m.held for m in models)
    for m in models:
        err = m.offset_ns - inj.true_offset(m.ref_ns)
        assert abs(err) <= m.error_bound_ns
        assert abs(err) < 5_000
