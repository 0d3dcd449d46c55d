"""Offset and drift of one host's clock against the manager's, from four-timestamp samples.

Pure code (no kernel, no Kafka) so every rule here is unit-tested.

* A sample's offset ``((t2-t1)+(t3-t4))/2`` is exact when the two one-way delays are
  equal; an asymmetry ``a`` shifts it by ``a/2``, and ``|a| <= delay`` always, so the true
  offset lies within ``delay/2`` of the sample's (the half-delay bound).
* Queueing only ever adds delay, so the samples with the least delay are the ones to
  trust: the window is cut into time buckets and only each bucket's minimum-delay sample
  is kept, then only the least-delayed share of those (the lower envelope) is fitted.
* Offset and drift are fitted to those with a Theil–Sen line (median of pairwise slopes,
  then median intercept), which shrugs off up to ~29 % outliers that least squares would
  follow. (Weighting pairs by their time spread was tried and rejected: one late outlier
  then dominates the median.)
* The error bound rests on one selected sample: the truth lies within half its delay of
  its offset, plus the line's distance from it, plus the drift's uncertainty carried from
  its instant to the reference instant; the tightest sample gives the bound. The drift's
  uncertainty comes from the delays too (``drift_interval``): both ends of every pair of
  samples are pinned to within half their delay, which bounds the slope between them.
* Impossible samples are discarded and counted (``Estimator.suspicious``), never fitted
  and never hidden with ``abs()``: t3 < t2; a negative delay (one of the one-way delays
  must then be negative); a one-way delay below minus the current model's bound (the model
  or the sample is wrong, and the model has the window behind it); and, at fit time, the
  selected samples that contradict the rest (no line passes within half their delay of
  all of them) are dropped worst-first. A forged or broken sample can therefore neither
  move the offset nor shrink the bound; only a larger delay (an on-path attacker holding
  packets back) can widen it.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Sample:
    """One exchange: t1/t4 on the manager's clock, t2/t3 on the host's."""

    probe_id: int
    t1: int
    t2: int
    t3: int
    t4: int

    @property
    def offset_ns(self) -> float:
        return ((self.t2 - self.t1) + (self.t3 - self.t4)) / 2

    @property
    def delay_ns(self) -> int:
        return (self.t4 - self.t1) - (self.t3 - self.t2)

    @property
    def mid_ns(self) -> float:
        """Manager-clock instant the offset refers to."""
        return (self.t1 + self.t4) / 2


@dataclass(frozen=True)
class Model:
    """host_clock(t) = t + offset_ns + drift_ppm*1e-6*(t - ref_ns), t on the manager's clock
    (the ClockModel record's convention)."""

    ref_ns: int
    offset_ns: float
    drift_ppm: float
    error_bound_ns: float
    samples: int
    min_delay_ns: float
    residual_ns: float            # robust spread of the selected samples around the line
    negative_delays: int          # samples discarded so far for a delay < 0
    negative_one_way: int         # ... for a one-way delay < 0 (against the model or the rest)
    # False: the selected samples admit no common line within their half delays (negative
    # one-way delays, or a clock that is not linear over the window); the bound then rests
    # on Sen's statistical interval instead of the delays.
    consistent: bool = True
    drift_err_ppm: float = 0.0    # how far the true drift may be from drift_ppm
    held: bool = False            # carried over from an earlier, tighter fit (see fit())

    def offset_at(self, ref_ns: float) -> float:
        return self.offset_ns + self.drift_ppm * 1e-6 * (ref_ns - self.ref_ns)


@dataclass
class EstimatorConfig:
    window_ns: int = 30_000_000_000   # samples older than this (by t1) leave the window
    bucket_ns: int = 1_000_000_000    # one minimum-delay sample per bucket
    min_buckets: int = 2              # fewer: no fit (drift needs two instants)
    keep_fraction: float = 0.25       # of the bucket minima, the least-delayed share is fitted
    delay_slack_ns: float = 2_000.0   # ... plus any within this of the window's best
    max_samples: int = 100_000        # hard cap on the window (memory)
    # After this many samples in a row contradict the model, the model is what is wrong
    # (e.g. the host's clock was stepped): window and model are dropped and rebuilt.
    max_rejected_in_a_row: int = 32
    max_dropped_fraction: float = 0.25  # at most this share of the selection is dropped


def _mad(values: list[float]) -> float:
    med = statistics.median(values)
    return 1.4826 * statistics.median(abs(v - med) for v in values)


def theil_sen(xs: list[float], ys: list[float], z: float = 3.0) -> tuple[float, float, float]:
    """Slope, intercept (at x=0) and slope uncertainty of the Theil–Sen line through
    (xs, ys). The uncertainty is Sen's distribution-free interval at ``z`` sigmas: the
    spread of the pairwise slopes around their median, so a biased stretch of samples
    (a queue building up looks like drift) widens it even when residuals look small."""
    n = len(xs)
    slopes = sorted((ys[j] - ys[i]) / (xs[j] - xs[i])
                    for i in range(n) for j in range(i + 1, n) if xs[j] != xs[i])
    if not slopes:
        return 0.0, statistics.median(ys), 0.0
    slope = statistics.median(slopes)
    c = z * math.sqrt(n * (n - 1) * (2 * n + 5) / 18)
    lo = slopes[max(0, math.floor((len(slopes) - c) / 2))]
    hi = slopes[min(len(slopes) - 1, math.ceil((len(slopes) + c) / 2))]
    intercept = statistics.median(y - slope * x for x, y in zip(xs, ys, strict=True))
    return slope, intercept, max(hi - slope, slope - lo)


def drift_interval(xs: list[float], ys: list[float],
                   halves: list[float]) -> tuple[float, float] | None:
    """Every drift the samples allow: the truth at x_i lies within halves[i] of ys[i] (half
    the delay), so over any two samples the true slope is within
    ((y_j - y_i) ± (h_i + h_j)) / (x_j - x_i); intersected over all pairs. None when the
    samples contradict each other (a negative one-way delay, or a clock that is not linear
    over the window)."""
    lo, hi = -math.inf, math.inf
    n = len(xs)
    for i in range(n):
        for j in range(i + 1, n):
            dx = xs[j] - xs[i]
            if dx == 0:
                continue
            dy, w = ys[j] - ys[i], halves[i] + halves[j]
            a, b = (dy - w) / dx, (dy + w) / dx
            lo, hi = max(lo, min(a, b)), min(hi, max(a, b))
    return (lo, hi) if lo <= hi else None


class Estimator:
    """Sliding window of one host's samples; ``fit()`` gives the current Model or None."""

    REASONS = ("t3_before_t2", "negative_delay", "negative_one_way")

    def __init__(self, config: EstimatorConfig | None = None) -> None:
        self.config = config or EstimatorConfig()
        self._window: deque[Sample] = deque()
        self._last: Model | None = None
        self._rejected_in_a_row = 0
        self.suspicious: dict[str, int] = dict.fromkeys(self.REASONS, 0)
        self.restarts = 0     # times the model was dropped for contradicting every sample

    def check(self, sample: Sample) -> str | None:
        """Why ``sample`` is impossible (a REASONS entry), or None."""
        if sample.t3 < sample.t2:
            return "t3_before_t2"
        if sample.delay_ns < 0:
            return "negative_delay"
        m = self._last
        if m is not None and m.consistent:
            # Under a model true within b, a real one-way delay reads at least -b.
            t = sample.mid_ns
            b = m.error_bound_ns + m.drift_err_ppm * 1e-6 * abs(t - m.ref_ns)
            off = m.offset_at(t)
            if sample.t2 - sample.t1 - off < -b or sample.t4 - sample.t3 + off < -b:
                return "negative_one_way"
        return None

    def add(self, sample: Sample) -> bool:
        """Add ``sample`` to the window; False (and counted) when it is impossible."""
        why = self.check(sample)
        if why is not None:
            self.suspicious[why] += 1
            if why == "negative_one_way":
                self._rejected_in_a_row += 1
                if self._rejected_in_a_row >= self.config.max_rejected_in_a_row:
                    self._window.clear()
                    self._last = None
                    self._rejected_in_a_row = 0
                    self.restarts += 1
            return False
        self._rejected_in_a_row = 0
        self._window.append(sample)
        newest = sample.t1
        while self._window and (newest - self._window[0].t1 > self.config.window_ns
                                or len(self._window) > self.config.max_samples):
            self._window.popleft()
        return True

    def __len__(self) -> int:
        return len(self._window)

    def select(self) -> list[Sample]:
        """The minimum-delay sample of each time bucket, then the lower envelope of those."""
        cfg = self.config
        best: dict[int, Sample] = {}
        for s in self._window:
            b = int(s.mid_ns // cfg.bucket_ns)
            if b not in best or s.delay_ns < best[b].delay_ns:
                best[b] = s
        chosen = sorted(best.values(), key=lambda s: s.t1)
        if len(chosen) <= cfg.min_buckets:
            return chosen
        # The lower envelope: the best `keep_fraction` of the bucket minima (at least
        # min_buckets), plus any other within delay_slack_ns of the very best. A standing
        # queue that covers most of the window then stays out of the fit.
        delays = sorted(s.delay_ns for s in chosen)
        k = max(cfg.min_buckets, math.ceil(cfg.keep_fraction * len(delays)))
        limit = max(delays[k - 1], delays[0] + cfg.delay_slack_ns)
        return [s for s in chosen if s.delay_ns <= limit]

    def fit(self) -> Model | None:
        """The current model. When a standing queue covers the whole window, a fresh fit
        is worse than the previous model carried forward with its drift (its bound grows
        by the drift uncertainty times the time since); the tighter of the two wins, so a
        few seconds of congestion do not throw away what the quiet seconds before knew."""
        fresh = self._fit()
        last = self._last
        if (fresh is not None and last is not None and last.consistent
                and fresh.ref_ns > last.ref_ns):
            held_bound = (last.error_bound_ns
                          + last.drift_err_ppm * 1e-6 * (fresh.ref_ns - last.ref_ns))
            if held_bound < fresh.error_bound_ns:
                fresh = replace(last, ref_ns=fresh.ref_ns,
                                offset_ns=last.offset_at(fresh.ref_ns),
                                error_bound_ns=held_bound, held=True,
                                negative_delays=fresh.negative_delays,
                                negative_one_way=fresh.negative_one_way)
        if fresh is not None:
            self._last = fresh
        return fresh

    def _line(self, chosen: list[Sample]) -> tuple[float, float, float, float,
                                                     tuple[float, float] | None]:
        base = chosen[0].mid_ns
        xs = [s.mid_ns - base for s in chosen]
        ys = [s.offset_ns for s in chosen]
        slope, intercept, slope_err = theil_sen(xs, ys)
        return base, slope, intercept, slope_err, drift_interval(
            xs, ys, [s.delay_ns / 2 for s in chosen])

    def _drop_contradictions(self, chosen: list[Sample]) -> int:
        """Selected samples that no line through the rest can explain (a one-way delay
        would be negative) leave the window, worst first, if that makes the rest consistent
        within max_dropped_fraction; otherwise nothing is dropped. Returns how many left."""
        base = chosen[0].mid_ns
        if drift_interval([s.mid_ns - base for s in chosen], [s.offset_ns for s in chosen],
                          [s.delay_ns / 2 for s in chosen]) is not None:
            return 0   # the common case: consistent, nothing to drop
        kept = list(chosen)
        limit = math.floor(self.config.max_dropped_fraction * len(chosen))
        while len(chosen) - len(kept) < limit and len(kept) > self.config.min_buckets:
            base, slope, intercept, _err, allowed = self._line(kept)
            if allowed is not None:
                break
            worst = max(kept, key=lambda s: abs(s.offset_ns - intercept
                                                - slope * (s.mid_ns - base)) - s.delay_ns / 2)
            kept.remove(worst)
        if len(kept) == len(chosen) or self._line(kept)[4] is None:
            return 0
        gone = {id(s) for s in chosen} - {id(s) for s in kept}
        self._window = deque(s for s in self._window if id(s) not in gone)
        self.suspicious["negative_one_way"] += len(gone)
        return len(gone)

    def _fit(self) -> Model | None:
        chosen = self.select()
        if len(chosen) < self.config.min_buckets:
            return None
        for _ in range(3):   # the buckets of dropped samples may now offer others
            if not self._drop_contradictions(chosen):
                break
            chosen = self.select()
        base = chosen[0].mid_ns
        xs = [s.mid_ns - base for s in chosen]
        ys = [s.offset_ns for s in chosen]
        slope, intercept, slope_err = theil_sen(xs, ys)
        # Prefer the drift interval the delays guarantee; Sen's interval only when the
        # samples contradict each other.
        allowed = drift_interval(xs, ys, [s.delay_ns / 2 for s in chosen])
        if allowed is not None:
            slope_err = max(slope - allowed[0], allowed[1] - slope, 0.0)
        residuals = [y - (intercept + slope * x) for x, y in zip(xs, ys, strict=True)]
        spread = _mad(residuals)
        ref_ns = int(self._window[-1].mid_ns)  # the newest sample: the model is "now"
        x_ref = ref_ns - base
        offset = intercept + slope * x_ref
        # The bound leans on one sample j: the truth at its instant lies within d_j/2 of
        # its offset (one-way delays are never negative), the line's distance from that
        # sample is known, and only the drift carries it from there to the reference
        # instant. The tightest such sample gives the bound.
        bound = min(abs(offset - (y + slope * (x_ref - x))) + s.delay_ns / 2
                    + slope_err * abs(x_ref - x)
                    for s, x, y in zip(chosen, xs, ys, strict=True))

        return Model(ref_ns=ref_ns, offset_ns=offset, drift_ppm=slope * 1e6,
                     error_bound_ns=bound, samples=len(chosen),
                     min_delay_ns=float(min(s.delay_ns for s in chosen)),
                     residual_ns=spread,
                     negative_delays=self.suspicious["negative_delay"],
                     negative_one_way=self.suspicious["negative_one_way"],
                     consistent=allowed is not None, drift_err_ppm=slope_err * 1e6)
