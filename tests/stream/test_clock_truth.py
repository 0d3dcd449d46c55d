"""Clock correction against an injected truth, not against the code's own arithmetic.

Each case is a timeline chosen by hand: the true (reference-clock) instant a sampled byte
passes every point, with distinct, irregular durations between points. Every host stamps
those instants with its own injected clock, host = ref + offset + drift * (ref - epoch), the
lab's arithmetic (bpf/clock.py) done here exactly with fractions, and gets a ClockModel
record (schemas/clock_model.avsc) describing that clock at a reference instant ``ref_ns``
far from the sample (before it, or after it: a model refitted later). ``breakdown`` must
then give back every injected duration, and every cross-host segment the pair's error
bound as the design defines it (the sum of the two hosts' model bounds, 0 for the manager,
0 between hosts sharing one kernel clock, infinite for a host without a model).

The expected values are literals of the case (durations, bounds), never computed with
stream code. ``test_the_check_fails_against_wrong_implementations`` keeps the proof that
the check can fail: deliberately wrong variants of the correction, the pairing and the
bounds all make it fail.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction

import pytest

from latscope.stream import segments
from latscope.stream.segments import ClockView, breakdown

INF = math.inf
# Every corrected timestamp is the true instant to within 1 ns: the host's stamp is the
# exact injected time rounded to a whole ns (<= 0.5 ns), and the correction rounds its
# result to a whole ns again. A duration (two of them) is therefore exact to 2 ns. Every
# wrong variant below is off by microseconds to milliseconds.
ROUNDING_NS = 2
DEVICE_POINTS = {"xdp", "dev_rx", "dev_queue", "dev_xmit"}
EPOCH = 200_000 * 10**9          # the lab's drift epoch: ~2.3 days of uptime
T0 = EPOCH + 1_700 * 10**9       # first point of every sample: 1700 s into the run


@dataclass(frozen=True)
class Clock:
    """A host's injected clock: host = ref + offset_ns + drift_ppm * 1e-6 * (ref - EPOCH)."""

    offset_ns: int
    drift_ppm: Fraction

    def host_ns(self, ref_ns: int) -> int:
        exact = ref_ns + self.offset_ns + self.drift_ppm / 10**6 * (ref_ns - EPOCH)
        return round(exact)

    def model(self, host: str, ref_ns: int, bound_ns: float, manager: str) -> dict:
        """The ClockModel a perfect sync would publish: this clock, expressed at ``ref_ns``
        (its offset at that instant, which is not the offset at the epoch)."""
        offset_at_ref = self.offset_ns + self.drift_ppm / 10**6 * (ref_ns - EPOCH)
        return {"schema_version": 1, "manager": manager, "host": host, "ref_ns": ref_ns,
                "offset_ns": float(offset_at_ref), "drift_ppm": float(self.drift_ppm),
                "error_bound_ns": bound_ns, "samples": 16, "min_delay_ns": 20_000.0,
                "updated_unix_ms": 0}


@dataclass(frozen=True)
class Hop:
    """The byte passes ``point`` (on ``dev``) of ``host`` ``after_ns`` after the previous hop."""

    host: str
    point: str
    dev: str | None
    after_ns: int

    @property
    def label(self) -> str:   # design §8: host:point, or host:point@device for device points
        return f"{self.host}:{self.point}@{self.dev}" if self.point in DEVICE_POINTS \
            else f"{self.host}:{self.point}"


@dataclass
class Case:
    """One sampled byte: the copy that got through (``hops``), what else the hosts stamped
    (``extra``: (host, point, dev, true ref ns) of copies that did not count), the clocks,
    the models, and the expected bound of each cross-host segment in path order."""

    name: str
    hops: list[Hop]
    clocks: dict[str, Clock]                       # per kernel: a container uses its parent's
    models: dict[str, tuple[int, float]]          # host -> (model ref_ns, bound_ns)
    wire_bounds: list[float]                       # expected, per cross-host segment
    manager: str = "mgr"
    clock_hosts: dict[str, str] = field(default_factory=dict)
    path: list[str] | None = None
    reported: list[str] | None = None              # hosts that sent records (default: all)
    extra: list[tuple[str, str, str | None, int]] = field(default_factory=list)
    split: str | None = None                       # this host's record comes in two parts

    def true_times(self) -> list[int]:
        return list(itertools.accumulate((h.after_ns for h in self.hops), initial=T0))[1:]

    def kernel(self, host: str) -> Clock:
        return self.clocks[self.clock_hosts.get(host, host)]

    def records(self) -> list[dict]:
        stamped = [(h.host, h.point, h.dev, t) for h, t in zip(self.hops, self.true_times(),
                                                                strict=True)]
        by_host: dict[str, list[dict]] = {}
        for host, point, dev, ref in stamped + self.extra:
            by_host.setdefault(host, []).append(
                {"point": point, "ts_ns": self.kernel(host).host_ns(ref), "dev": dev,
                 "ifindex": 3 if dev else 0, "netns": 0, "cpu": 1})
        flow = {"proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
                "sport": 40000, "dport": 5201}
        recs = []
        for host, hits in by_host.items():
            if self.reported is not None and host not in self.reported:
                continue
            rec = {"schema_version": 1, "host": host, "flow_id": "f-truth", "flow": flow,
                   "seq": 72400, "retrans": False, "complete": True, "hits": hits}
            if host == self.split:   # a linger flush, then the rest (one hit in both)
                cut = len(hits) // 2
                recs += [dict(rec, hits=hits[:cut + 1], complete=False), dict(rec, hits=hits[cut:])]
            else:
                recs.append(rec)
        return recs[::-1]   # arrival order is not path order

    def clock_view(self) -> ClockView:
        models = {h: self.kernel(h).model(h, ref, bound, self.manager)
                  for h, (ref, bound) in self.models.items()}
        return ClockView(models, self.manager, self.clock_hosts)

    def expected(self) -> list[tuple[str, str, int, float | None]]:
        """(from, to, true duration, bound or None for a same-host segment) along the copy
        that got through; hosts that sent nothing are skipped over."""
        hops = [h for h in self.hops if self.reported is None or h.host in self.reported]
        times = {id(h): t for h, t in zip(self.hops, self.true_times(), strict=True)}
        bounds = iter(self.wire_bounds)
        out = []
        for a, b in itertools.pairwise(hops):
            out.append((a.label, b.label, times[id(b)] - times[id(a)],
                        None if a.host == b.host else next(bounds)))
        assert next(bounds, None) is None, f"{self.name}: more wire bounds than wires"
        return out


def check(case: Case) -> None:
    """breakdown of the case's records gives back the injected durations and the bounds."""
    bd = breakdown(case.records(), case.clock_view(), path=case.path)
    want = case.expected()
    got = [(s["from"], s["to"], s["duration_ns"], s["error_bound_ns"]) for s in bd["segments"]]
    assert [g[:2] for g in got] == [w[:2] for w in want], (case.name, got)
    bad = []
    for (frm, to, dur, bound), (_, _, true_dur, want_bound) in zip(got, want, strict=True):
        if want_bound is None:
            ok = bound == 0 and abs(dur - true_dur) <= ROUNDING_NS
        elif math.isinf(want_bound):   # an unsynced host: no claim but the infinite bound
            ok = math.isinf(bound)
        else:
            ok = bound == want_bound and abs(dur - true_dur) <= ROUNDING_NS
        if not ok:
            bad.append(f"{frm}→{to}: {dur} ns (true {true_dur}), bound {bound} (want {want_bound})")
    assert not bad, f"{case.name}: " + "; ".join(bad)
    times = case.true_times()
    hosts = [h.host for h in case.hops if case.reported is None or h.host in case.reported]
    assert bd["hosts"] == list(dict.fromkeys(hosts)), (case.name, bd["hosts"])
    assert abs(bd["ts_ns"] - times[0]) <= ROUNDING_NS // 2, (case.name, bd["ts_ns"] - times[0])
    if bd["complete"] and not any(map(math.isinf, case.wire_bounds)):
        assert abs(bd["end_to_end_ns"] - (times[-1] - times[0])) <= ROUNDING_NS, case.name


# ---- the timelines ---------------------------------------------------------------------------
# Durations are in ns, each one different. A wire over a veth is a few µs; a qdisc wait can be
# ms; the socket wait of a slow reader tens of ms.

def sender(h: str, dev: str, d: Sequence[int], *, tcp_tx: bool = True) -> list[Hop]:
    pts = [("sock_send", None), ("tcp_tx", None), ("ip_out", None), ("ip_post", None),
           ("dev_queue", dev), ("dev_xmit", dev)]
    if not tcp_tx:
        pts = [p for p in pts if p[0] != "tcp_tx"]
    return [Hop(h, p, dv, t) for (p, dv), t in zip(pts, d, strict=True)]


def receiver(h: str, dev: str, d: Sequence[int], *, ip_pre: bool = True) -> list[Hop]:
    pts = [("dev_rx", dev), ("ip_pre", None), ("ip_in", None), ("tcp_rx", None),
           ("sock_recv", None)]
    if not ip_pre:
        pts = [p for p in pts if p[0] != "ip_pre"]
    return [Hop(h, p, dv, t) for (p, dv), t in zip(pts, d, strict=True)]


def forwarder(h: str, rx: str, tx: str, d: Sequence[int], *, dev_xmit: bool = True) -> list[Hop]:
    pts = [("dev_rx", rx), ("ip_pre", None), ("ip_post", None), ("dev_queue", tx),
           ("dev_xmit", tx)]
    if not dev_xmit:
        pts = pts[:-1]
    return [Hop(h, p, dv, t) for (p, dv), t in zip(pts, d, strict=True)]


F = Fraction
# Four kernels with their own offsets and drifts (5-30 µs/s, design §4, either sign).
CLOCKS = {"h1": Clock(5_200_000, F("18.5")), "r1": Clock(3_100_000, F("-27.25")),
          "r2": Clock(-80_000_000, F("9.75")), "h2": Clock(-12_900_000, F("-4.5"))}
# Model reference instants far from T0: 1100 s before, 250 s after, 40 min before, 90 s after.
REFS = {"h1": EPOCH + 600 * 10**9, "r1": T0 + 250 * 10**9, "r2": EPOCH - 700 * 10**9,
        "h2": T0 + 90 * 10**9 + 123_457}


def routed(name: str, path: list[str] | None) -> Case:
    """h1 → r1 → r2 → h2, four clocks. r2's raw clock runs ~20 ms behind r1's, so ordering
    the forwarders by raw time (no topology) would put r2 first."""
    hops = (sender("h1", "lsd-0a", [0, 3_217, 1_049, 388, 712, 45_913])
            + forwarder("r1", "lsd-0b", "lsd-1a", [7_451, 2_033, 5_870, 1_204, 289])
            + forwarder("r2", "lsd-1b", "lsd-2a", [3_338, 960, 4_412, 617, 88_003])
            + receiver("h2", "lsd-2b", [5_129, 1_777, 530, 2_648, 31_006_411]))
    return Case(name, hops, CLOCKS,
                {h: (REFS[h], b) for h, b in
                 (("h1", 310.0), ("r1", 1270.5), ("r2", 455.0), ("h2", 2030.0))},
                wire_bounds=[310.0 + 1270.5, 1270.5 + 455.0, 455.0 + 2030.0], path=path)


def container_behind_bridge() -> Case:
    """h1 → h2 → c1: h2 routes into its bridge br0, the bridge hands the frame to c1's veth
    port; c1 is a container on h2's kernel, so the h2→c1 wire carries no sync error."""
    hops = [*sender("h1", "lsd-0a", [0, 4_406, 1_513, 402, 933, 12_087_205]),
            Hop("h2", "dev_rx", "lsd-0b", 6_310), Hop("h2", "ip_pre", None, 2_251),
            Hop("h2", "ip_post", None, 3_907), Hop("h2", "dev_queue", "br0", 725),
            Hop("h2", "dev_xmit", "br0", 161), Hop("h2", "dev_queue", "lsd-1b", 1_389),
            Hop("h2", "dev_xmit", "lsd-1b", 247),
            *receiver("c1", "lsd-1a", [4_873, 2_096, 811, 3_560, 9_204])]
    return Case("container behind a bridge", hops, CLOCKS,
                {"h1": (REFS["h1"], 640.25), "h2": (REFS["h2"], 1_915.0)},
                wire_bounds=[640.25 + 1_915.0, 0.0], clock_hosts={"c1": "h2"},
                path=["h1", "h2", "c1"])


def container_to_reference() -> Case:
    """c1 → h2 → h1 with h1 the reference clock (bound 0): the wire into h1 carries h2's
    bound alone. br_netfilter on h2 (PREROUTING inside the bridge: dev_rx@port, ip_pre,
    dev_rx@br0), XDP on h1 before dev_rx."""
    hops = [*sender("c1", "lsd-1a", [0, 2_744, 1_130, 455, 602, 317]),
            Hop("h2", "dev_rx", "lsd-1b", 5_512), Hop("h2", "ip_pre", None, 18_568),
            Hop("h2", "dev_rx", "br0", 1_362), Hop("h2", "ip_post", None, 1_843),
            Hop("h2", "dev_queue", "lsd-0b", 811), Hop("h2", "dev_xmit", "lsd-0b", 1_071),
            Hop("h1", "xdp", "lsd-0a", 2_957), Hop("h1", "dev_rx", "lsd-0a", 1_466),
            Hop("h1", "ip_pre", None, 8_462), Hop("h1", "ip_in", None, 681),
            Hop("h1", "tcp_rx", None, 1_032), Hop("h1", "sock_recv", None, 61_250_447)]
    # h1 is the manager: its clock is the reference, by definition
    return Case("container to the reference host", hops, {**CLOCKS, "h1": Clock(0, F(0))},
                {"h2": (REFS["h2"], 1_750.5)}, wire_bounds=[0.0, 1_750.5], manager="h1",
                clock_hosts={"c1": "h2"}, path=["c1", "h2", "h1"])


def missing_points() -> Case:
    """No tcp_tx hook on h1 (socket+tcp merged), r1's dev_xmit lost (its qdisc wait and the
    wire merged into one cross-host segment), no ip_pre on h2."""
    hops = (sender("h1", "lsd-0a", [0, 9_001, 377, 1_420, 14_222], tcp_tx=False)
            + forwarder("r1", "lsd-0b", "lsd-1a", [6_115, 2_870, 3_391, 740], dev_xmit=False)
            + receiver("h2", "lsd-1b", [2_406_883, 1_904, 622, 47_310], ip_pre=False))
    return Case("missing points", hops, CLOCKS,
                {h: (REFS[h], b) for h, b in (("h1", 310.0), ("r1", 1270.5), ("h2", 2030.0))},
                wire_bounds=[310.0 + 1270.5, 1270.5 + 2030.0], path=["h1", "r1", "h2"])


def missing_host() -> Case:
    """r1 never reported: the sample is incomplete, and its one cross-host segment spans
    r1 (h1's exit to h2's entry, the bound of h1 and h2)."""
    case = missing_points()
    case.name, case.reported = "missing host", ["h1", "h2"]
    case.wire_bounds = [310.0 + 2030.0]
    return case


def resent_copies() -> Case:
    """A spurious resend: h1 sent the byte at T0, its first copy crossed r1 and was lost
    after it; h1 resent it 31.4 ms later (tcp_tx again) and that copy crossed r1 and reached
    h2. The copy that counts is the second one everywhere; the resend wait is h1's socket.
    h2's record came in two parts (a linger flush), one hit in both."""
    first = [0, 3_217, 1_049, 388, 712, 45_913, 7_451, 2_033, 5_870, 1_204, 289]
    hops = (sender("h1", "lsd-0a", [0, 31_400_000, 1_211, 405, 698, 52_107])
            + forwarder("r1", "lsd-0b", "lsd-1a", [7_020, 2_118, 5_644, 1_187, 302])
            + receiver("h2", "lsd-1b", [5_560, 1_701, 547, 2_590, 3_117_090]))
    t, extra = T0, []
    for (host, point, dev), d in zip(
            [("h1", "sock_send", None), ("h1", "tcp_tx", None), ("h1", "ip_out", None),
             ("h1", "ip_post", None), ("h1", "dev_queue", "lsd-0a"),
             ("h1", "dev_xmit", "lsd-0a"), ("r1", "dev_rx", "lsd-0b"), ("r1", "ip_pre", None),
             ("r1", "ip_post", None), ("r1", "dev_queue", "lsd-1a"),
             ("r1", "dev_xmit", "lsd-1a")], first, strict=True):
        t += d
        if point != "sock_send":   # the app handed the byte over once
            extra.append((host, point, dev, t))
    return Case("resent copies", hops, CLOCKS,
                {h: (REFS[h], b) for h, b in (("h1", 310.0), ("r1", 1270.5), ("h2", 2030.0))},
                wire_bounds=[310.0 + 1270.5, 1270.5 + 2030.0], path=["h1", "r1", "h2"],
                extra=extra, split="h2")


def unsynced_host() -> Case:
    """h2 has no model yet: its wire is marked unusable (infinite bound), its own
    segments are still exact."""
    hops = (sender("h1", "lsd-0a", [0, 3_301, 1_062, 371, 705, 2_210])
            + receiver("h2", "lsd-0b", [4_408, 1_693, 556, 2_711, 77_019]))
    return Case("unsynced host", hops, CLOCKS, {"h1": (REFS["h1"], 310.0)},
                wire_bounds=[INF], path=["h1", "h2"])


CASES: dict[str, Callable[[], Case]] = {
    "routed": lambda: routed("routed", ["h1", "r1", "r2", "h2"]),
    "routed, no topology": lambda: routed("routed, no topology", None),
    "container behind a bridge": container_behind_bridge,
    "container to the reference host": container_to_reference,
    "missing points": missing_points,
    "missing host": missing_host,
    "resent copies": resent_copies,
    "unsynced host": unsynced_host,
}


@pytest.fixture(params=["known shape (C)", "general path"])
def path_kind(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways to a breakdown: the cached-shape fast path (stream/native/segments.c) and
    the general one it declines (resent copies always take the general one)."""
    if request.param == "general path":
        monkeypatch.setattr(segments, "plain_refs", lambda *a: NotImplemented)
    return request.param


@pytest.mark.parametrize("name", CASES)
def test_breakdown_gives_back_the_injected_durations_and_bounds(name: str, path_kind: str) -> None:
    check(CASES[name]())


def test_the_timelines_are_what_they_claim() -> None:
    """The cases exercise what they are for: irregular durations, drift, far references,
    raw clocks that disagree by milliseconds."""
    for make in CASES.values():
        case = make()
        durs = [h.after_ns for h in case.hops[1:]]
        assert len(set(durs)) == len(durs), case.name
        assert all(case.kernel(h).drift_ppm != 0 for h in case.models), case.name
        assert all(abs(ref - (T0 + 10**8)) > 60 * 10**9 for ref, _ in case.models.values())
    raw = {h: CLOCKS[h].host_ns(T0) - T0 for h in CLOCKS}
    assert raw["r1"] - raw["r2"] > 15_000_000            # uncorrected, r2 looks earlier


# ---- the check can fail ----------------------------------------------------------------------

def _drift_ignored(mp: pytest.MonkeyPatch, case: Case) -> None:
    """Drift dropped from the correction: only the offset at ref_ns is applied."""
    mp.setattr(segments, "_ref_params", lambda m: (m["offset_ns"], 0.0, 1.0))
    mp.setattr(segments, "to_reference", lambda m, t: t - m["offset_ns"])


def _ref_ns_ignored(mp: pytest.MonkeyPatch, case: Case) -> None:
    """The model's offset taken as the offset at time 0 (ref_ns dropped)."""
    def params(m: dict) -> tuple[float, float, float]:
        return m["offset_ns"], 0.0, 1.0 + m["drift_ppm"] * 1e-6

    mp.setattr(segments, "_ref_params", params)
    mp.setattr(segments, "to_reference",
               lambda m, t: (t - m["offset_ns"]) / (1.0 + m["drift_ppm"] * 1e-6))


def _models_swapped(mp: pytest.MonkeyPatch, case: Case) -> None:
    """Two hosts' models swapped (a lookup by the wrong host)."""
    a, b = sorted(case.models)[:2]
    swap = {a: b, b: a}
    model = ClockView.model
    mp.setattr(ClockView, "model", lambda self, h: model(self, swap.get(h, h)))


def _paired_one_off(mp: pytest.MonkeyPatch, case: Case) -> None:
    """Each segment gets the next pair's timestamps. With one uniform step every duration
    is unchanged, so the older synthetic tests cannot see this."""
    fill = segments.fill_segments

    def shifted(templates: tuple, refs: list, bounds: dict) -> list:
        return fill(templates, [*refs[1:], 2 * refs[-1] - refs[-2]], bounds)

    mp.setattr(segments, "fill_segments", shifted)


def _bound_max(mp: pytest.MonkeyPatch, case: Case) -> None:
    """A pair's bound as the larger of the two instead of their sum."""
    def pair_bound(self: ClockView, a: str, b: str) -> float:
        same = self.clock_hosts.get(a, a) == self.clock_hosts.get(b, b)
        return 0.0 if same else max(self.bound(a), self.bound(b))

    mp.setattr(ClockView, "pair_bound", pair_bound)


def _shared_kernel_ignored(mp: pytest.MonkeyPatch, case: Case) -> None:
    """A container's wire to its own host given the two bounds though one clock stamps both."""
    mp.setattr(ClockView, "pair_bound", lambda self, a, b: self.bound(a) + self.bound(b))


def _first_copy_kept(mp: pytest.MonkeyPatch, case: Case) -> None:
    """Repeated points resolved by keeping each point's first hit (mixing copies)."""
    def first(hits: Sequence[dict], not_after: object = None) -> tuple[list[dict], bool]:
        out: dict = {}
        for h in sorted(hits, key=lambda h: h["ts_ns"]):
            out.setdefault((h["point"], h.get("dev")), h)
        return list(out.values()), len(out) < len(hits)

    mp.setattr(segments, "drop_repeats", first)


# mutation -> the cases it must break (each has what the mutation gets wrong)
WITH_DRIFT = ["routed", "routed, no topology", "container behind a bridge",
              "container to the reference host", "missing points", "missing host",
              "resent copies"]
MUTATIONS: dict[str, tuple[Callable[[pytest.MonkeyPatch, Case], None], list[str]]] = {
    "drift ignored": (_drift_ignored, WITH_DRIFT),
    "ref_ns ignored": (_ref_ns_ignored, WITH_DRIFT),
    "two hosts' models swapped": (_models_swapped, ["routed", "routed, no topology",
                                                    "container behind a bridge",
                                                    "missing points", "missing host",
                                                    "resent copies"]),
    "segments paired one point off": (_paired_one_off, list(CASES)),
    "pair bound: max, not sum": (_bound_max, ["routed", "routed, no topology",
                                               "container behind a bridge",
                                               "missing points", "missing host",
                                               "resent copies"]),
    "shared kernel clock not seen": (_shared_kernel_ignored, ["container behind a bridge",
                                                              "container to the reference host"]),
    "first copy of a resent byte kept": (_first_copy_kept, ["resent copies"]),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_the_check_fails_against_wrong_implementations(mutation: str, path_kind: str) -> None:
    apply, targets = MUTATIONS[mutation]
    for name in targets:
        case = CASES[name]()
        with pytest.MonkeyPatch.context() as mp:
            apply(mp, case)
            with pytest.raises(AssertionError):
                check(case)


def test_the_unmutated_code_passes_the_same_loop() -> None:
    """The loop above with no mutation: every target passes (so a raise means the mutation)."""
    for _, targets in MUTATIONS.values():
        for name in targets:
            check(CASES[name]())

