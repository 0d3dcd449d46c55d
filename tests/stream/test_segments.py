"""Breakdown arithmetic: path order, layers, clock correction, negatives, incomplete samples."""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
from pathlib import Path

import pytest

from latscope.stats.sketch import Sketch
from latscope.stream.segments import ClockView, breakdown
from latscope.stream.synthetic import PathSpec, clock_model, sample_records

PATH = ["h1", "h2", "c1"]


def layers(bd: dict) -> list[tuple[str, str, str]]:
    return [(s["from"], s["to"], s["layer"]) for s in bd["segments"]]


def test_three_host_path_segments_and_layers() -> None:
    spec = PathSpec(PATH, step_ns=1000)
    recs = sample_records(spec, seq=72400, t0_ref_ns=10**12)
    bd = breakdown(list(reversed(recs)), ClockView({}, "mgr"), path=PATH)
    assert bd["complete"] and bd["missing_hosts"] == []
    assert bd["hosts"] == PATH
    assert layers(bd) == [
        ("h1:sock_send", "h1:tcp_tx", "socket"), ("h1:tcp_tx", "h1:ip_out", "tcp"),
        ("h1:ip_out", "h1:ip_post", "ip"), ("h1:ip_post", "h1:dev_queue@eth0", "ip"),
        ("h1:dev_queue@eth0", "h1:dev_xmit@eth0", "qdisc"),
        ("h1:dev_xmit@eth0", "h2:dev_rx@eth0", "wire"),
        ("h2:dev_rx@eth0", "h2:ip_pre", "device"), ("h2:ip_pre", "h2:ip_post", "ip"),
        ("h2:ip_post", "h2:dev_queue@eth1", "ip"),
        ("h2:dev_queue@eth1", "h2:dev_xmit@eth1", "qdisc"),
        ("h2:dev_xmit@eth1", "c1:dev_rx@eth0", "wire"),
        ("c1:dev_rx@eth0", "c1:ip_pre", "device"), ("c1:ip_pre", "c1:ip_in", "ip"),
        ("c1:ip_in", "c1:tcp_rx", "tcp"), ("c1:tcp_rx", "c1:sock_recv", "socket")]
    assert all(s["duration_ns"] == 1000 for s in bd["segments"])
    assert bd["end_to_end_ns"] == spec.end_to_end_ns()


def test_udp_datagram_starts_and_ends_at_the_socket_points() -> None:
    """A UDP datagram has no TCP points: sock_send -> ip_out and ip_in -> sock_recv are
    its socket segments, and the sample runs from the sender's send to the receiver's
    read (complete without a path too)."""
    spec = PathSpec(["h1", "c1"], step_ns=1000)
    recs = sample_records(spec, seq=12345, t0_ref_ns=10**12)
    for r in recs:
        r["flow"] = {**r["flow"], "proto": "udp"}
        r["hits"] = [h for h in r["hits"] if h["point"] not in ("tcp_tx", "tcp_rx")]
    for path in (["h1", "c1"], None):
        bd = breakdown(recs, ClockView({}, "mgr"), path=path)
        got = layers(bd)
        assert got[0] == ("h1:sock_send", "h1:ip_out", "socket")
        assert got[-1] == ("c1:ip_in", "c1:sock_recv", "socket")
        assert "tcp" not in {layer for _, _, layer in got}
        assert bd["complete"] and bd["end_to_end_ns"] is not None


def test_clock_offsets_are_corrected_and_bounds_add() -> None:
    offsets = {"h1": 5_000_000, "h2": -5_000_000, "c1": 1_234}
    spec = PathSpec(PATH, step_ns=2000, offsets_ns=offsets)
    recs = sample_records(spec, seq=0, t0_ref_ns=10**12)
    models = {h: clock_model(h, o, bound_ns=300) for h, o in offsets.items()}
    bd = breakdown(recs, ClockView(models, "mgr"), path=PATH)
    wires = [s for s in bd["segments"] if s["layer"] == "wire"]
    assert [w["duration_ns"] for w in wires] == [2000, 2000]
    assert [w["error_bound_ns"] for w in wires] == [600, 600]
    assert bd["ts_ns"] == 10**12   # reference clock of sock_send


def test_bad_clock_gives_negative_wire_not_hidden() -> None:
    spec = PathSpec(["h1", "c1"], step_ns=1000, offsets_ns={"c1": 0})
    recs = sample_records(spec, seq=0, t0_ref_ns=10**12)
    # A model claiming c1 is 50 µs ahead moves c1's points 50 µs earlier.
    bd = breakdown(recs, ClockView({"c1": clock_model("c1", 50_000)}, "h1"),
                   path=["h1", "c1"])
    wire = next(s for s in bd["segments"] if s["layer"] == "wire")
    assert wire["duration_ns"] == 1000 - 50_000
    assert bd["end_to_end_ns"] < 0


def test_missing_host_is_incomplete_but_published() -> None:
    recs = [r for r in sample_records(PathSpec(PATH), 0, 10**12) if r["host"] != "h2"]
    bd = breakdown(recs, ClockView({}, "mgr"), path=PATH)
    assert not bd["complete"] and bd["missing_hosts"] == ["h2"]
    assert bd["end_to_end_ns"] is None
    assert any(s["from"] == "h1:dev_xmit@eth0" and s["to"] == "c1:dev_rx@eth0"
               for s in bd["segments"])


def test_unsynced_host_has_infinite_bound() -> None:
    recs = sample_records(PathSpec(["h1", "c1"]), 0, 10**12)
    bd = breakdown(recs, ClockView({}, "mgr"))
    wire = next(s for s in bd["segments"] if s["layer"] == "wire")
    assert math.isinf(wire["error_bound_ns"])


def test_no_topology_orders_by_roles_and_merged_socket_tcp() -> None:
    recs = sample_records(PathSpec(PATH), 0, 10**12)
    for r in recs:   # no tcp_tx hook on this kernel
        r["hits"] = [h for h in r["hits"] if h["point"] != "tcp_tx"]
    bd = breakdown(list(reversed(recs)), ClockView({}, None))
    assert bd["hosts"] == PATH and bd["complete"]
    assert layers(bd)[0] == ("h1:sock_send", "h1:ip_out", "socket")


def test_missing_dev_xmit_merges_into_the_qdisc_segment() -> None:
    recs = sample_records(PathSpec(PATH), 0, 10**12)
    recs[0]["hits"] = [h for h in recs[0]["hits"] if h["point"] != "dev_xmit"]
    bd = breakdown(recs, ClockView({}, "mgr"), path=PATH)
    merged = [s for s in bd["segments"] if s["from"] == "h1:dev_queue@eth0"]
    assert [(s["to"], s["layer"], s["device"]) for s in merged] == [
        ("h2:dev_rx@eth0", "qdisc", "eth0")]


def test_bridge_and_container_veth_are_virtual_hops() -> None:
    # h2 routes into br0, the bridge hands the skb to the container's veth port.
    hits = [("dev_rx", "v12"), ("ip_pre", None), ("ip_post", None), ("dev_queue", "br0"),
            ("dev_xmit", "br0"), ("dev_queue", "vc1"), ("dev_xmit", "vc1")]
    rec = {"host": "h2", "flow_id": "f", "flow": {}, "seq": 1, "complete": True,
           "hits": [{"point": p, "ts_ns": 100 * i, "dev": d, "ifindex": 0}
                    for i, (p, d) in enumerate(hits)]}
    bd = breakdown([rec], ClockView({}, None))
    assert [s["layer"] for s in bd["segments"]] == [
        "device", "ip", "ip", "qdisc", "virtual", "qdisc"]
    assert bd["segments"][4]["device"] == "br0"


def test_retransmitted_byte_keeps_the_copy_that_got_through() -> None:
    recs = sample_records(PathSpec(["h1", "c1"], step_ns=1000), 0, 10**12)
    h1 = recs[0]
    # The first copy went out at ip_out/ip_post/dev_queue and was dropped by the qdisc;
    # the retransmission 200 ms later went through.
    first = [dict(h, ts_ns=h["ts_ns"] - 200_000_000) for h in h1["hits"]
             if h["point"] in ("ip_out", "ip_post", "dev_queue")]
    h1["hits"] = h1["hits"] + first
    bd = breakdown(recs, ClockView({}, None), path=["h1", "c1"])
    assert bd["retrans"] and bd["complete"]
    assert [s["duration_ns"] for s in bd["segments"]] == [1000] * (len(bd["segments"]))
    assert len({s["from"] for s in bd["segments"]}) == len(bd["segments"])


def test_repeats_after_the_copy_that_went_out_do_not_reorder_the_chain() -> None:
    hits = [("sock_send", None, 0), ("ip_out", None, 100), ("ip_post", None, 110),
            ("dev_queue", "e0", 120), ("dev_xmit", "e0", 200),
            # later passes of the same byte that never reached dev_xmit
            ("ip_out", None, 300), ("ip_post", None, 310), ("dev_queue", "e0", 320)]
    rec = {"host": "h1", "flow_id": "f", "flow": {}, "seq": 1, "complete": True,
           "hits": [{"point": p, "ts_ns": t, "dev": d, "ifindex": 0} for p, d, t in hits]}
    bd = breakdown([rec], ClockView({}, None))
    assert bd["retrans"]
    assert [s["duration_ns"] for s in bd["segments"]] == [100, 10, 10, 80]


def test_a_much_looser_recent_model_does_not_replace_a_tight_one() -> None:
    from latscope.stream.pipeline import keep_tighter

    tight = clock_model("h2", 1000, ref_ns=10**12, bound_ns=3000)
    loose = clock_model("h2", 2_800_000, ref_ns=10**12 + 5 * 10**9, bound_ns=2_800_000)
    assert keep_tighter(tight, loose, hold_s=30)
    assert not keep_tighter(tight, dict(loose, ref_ns=10**12 + 31 * 10**9), hold_s=30)
    assert not keep_tighter(tight, dict(loose, error_bound_ns=9000), hold_s=30)


def test_br_netfilter_order_follows_the_hosts_clock() -> None:
    # bridge-nf-call-iptables=1: PREROUTING runs inside the bridge, before the frame is
    # passed up to br0, so h2 stamps dev_rx@port, ip_pre, dev_rx@br0, ip_post in that order.
    path = ["c1", "h2", "h1"]
    recs = sample_records(PathSpec(path, step_ns=1000), 0, 10**12)
    h2 = next(r for r in recs if r["host"] == "h2")
    ip_pre = next(h for h in h2["hits"] if h["point"] == "ip_pre")
    h2["hits"].append(dict(ip_pre, point="dev_rx", dev="br0", ts_ns=ip_pre["ts_ns"] + 400))
    bd = breakdown(recs, ClockView({}, "mgr"), path=path)
    h2_segs = [(s["from"], s["to"], s["layer"], s["device"], s["duration_ns"])
               for s in bd["segments"] if s["hosts"] == ["h2"]]
    assert h2_segs[:3] == [
        ("h2:dev_rx@eth0", "h2:ip_pre", "device", "eth0", 1000),
        ("h2:ip_pre", "h2:dev_rx@br0", "virtual", "br0", 400),
        ("h2:dev_rx@br0", "h2:ip_post", "ip", None, 600)]
    # dev_rx@br0 was stamped between two of h2's points: the end-to-end is the path's.
    assert bd["end_to_end_ns"] == PathSpec(path, step_ns=1000).end_to_end_ns()
    # A wrong clock model still shows as a negative wire segment: only one host's own
    # points are ordered by time.
    bd = breakdown(recs, ClockView({"h1": clock_model("h1", 50_000)}, "mgr"), path=path)
    assert [s["duration_ns"] for s in bd["segments"] if s["layer"] == "wire"] == [
        1000, 1000 - 50_000]


def _copy(rec: dict, shift_ns: int, points: tuple[str, ...] | None = None) -> dict:
    """A second record of this host: the same byte passing again ``shift_ns`` later."""
    hits = [dict(h, ts_ns=h["ts_ns"] + shift_ns) for h in rec["hits"]
            if points is None or h["point"] in points]
    return dict(rec, hits=hits)


@pytest.mark.parametrize("gap_ns", [15_000_000, 50_000])   # a timer resend; ~ an RTT
def test_forwarder_keeps_one_copy_of_a_resent_byte(gap_ns: int) -> None:
    # A spurious resend: both copies cross h2 (two h2 records, the second not flagged:
    # h2 had already flushed the first), h1 keeps its first arrival.
    path = ["c1", "h2", "h1"]
    offsets = {"c1": -3_000_000, "h2": -3_000_000, "h1": 5_000_000}
    models = {h: clock_model(h, o, bound_ns=2000) for h, o in offsets.items()}
    clocks = ClockView(models, "mgr", clock_hosts={"c1": "h2"})
    recs = sample_records(PathSpec(path, step_ns=1000, offsets_ns=offsets), 0, 10**12)
    h2 = next(r for r in recs if r["host"] == "h2")
    h1 = next(r for r in recs if r["host"] == "h1")
    c1 = next(r for r in recs if r["host"] == "c1")
    resent = ("tcp_tx", "ip_out", "ip_post", "dev_queue", "dev_xmit")   # filter_retrans 0
    both = [*recs, _copy(c1, gap_ns, resent), _copy(h2, gap_ns),
            _copy(h1, gap_ns, ("dev_rx", "ip_pre", "ip_in", "tcp_rx"))]
    bd = breakdown(both, clocks, path=path)
    assert bd["retrans"] and bd["complete"]
    assert [s["duration_ns"] for s in bd["segments"]] == [1000] * len(bd["segments"])
    # The first copy was lost after h2: h1 only got the second, so h2's second pass is
    # the one that counts, again whole.
    lost = [*(r for r in recs if r["host"] != "h1"), _copy(h2, gap_ns),
            _copy(h1, gap_ns)]
    bd = breakdown(lost, clocks, path=path)
    segs = {(s["from"], s["to"]): s["duration_ns"] for s in bd["segments"]}
    assert segs[("h2:dev_rx@eth0", "h2:ip_pre")] == 1000
    assert segs[("h2:ip_pre", "h2:ip_post")] == 1000
    assert segs[("h2:dev_xmit@eth1", "h1:dev_rx@eth0")] == 1000
    # c1's single pass went out gap_ns before h2 got the copy that counts: TCP's resend.
    assert segs[("c1:dev_xmit@eth0", "h2:dev_rx@eth0")] == gap_ns + 1000


def test_demo_sample_with_two_h2_records_keeps_one_copy() -> None:
    # Real records of f2 from a `make demo` run (latscope.layer-events): h2 flushed the
    # first copy at its exit device, so the resend 6.75 ms later came as a second,
    # unflagged h2 record; h1 flushed its record at the duplicate (no sock_recv).
    def rec(host: str, hits: list[tuple[str, str | None, int]]) -> dict:
        return {"host": host, "flow_id": "f2", "flow": {}, "seq": 1054940400,
                "retrans": False, "complete": host != "h1",
                "hits": [{"point": p, "dev": d, "ts_ns": t, "ifindex": 0} for p, d, t in hits]}

    h2_pass = [("dev_rx", "lsd-1b"), ("ip_pre", "br0"), ("dev_rx", "br0"),
               ("ip_post", "lsd-0b"), ("dev_queue", "lsd-0b"), ("dev_xmit", "lsd-0b")]
    recs = [
        rec("h2", [(p, d, t) for (p, d), t in zip(h2_pass, (
            421968643, 421987211, 421988573, 421990416, 421991227, 421992298), strict=True)]),
        rec("h2", [(p, d, t) for (p, d), t in zip(h2_pass, (
            428723457, 428737668, 428738780, 428740212, 428740863, 428741654), strict=True)]),
        rec("c1", [("sock_send", None, 421948123), ("tcp_tx", None, 421951408),
                   ("ip_out", "lsd-1a", 421964317), ("ip_post", "lsd-1a", 421964867),
                   ("dev_queue", "lsd-1a", 421965528), ("dev_xmit", "lsd-1a", 421966770)]),
        rec("h1", [("dev_rx", "lsd-0a", 430737253), ("ip_pre", "lsd-0a", 430745715),
                   ("ip_in", "lsd-0a", 430746396), ("tcp_rx", None, 430747428)])]
    # h2's kernel clock is the reference here; h1 runs ~8.74 ms ahead of it (injected
    # offsets and drifts of that run), known to within the bound.
    clocks = ClockView({"h1": clock_model("h1", 8_742_000, manager="h2", bound_ns=5000)},
                       "h2", clock_hosts={"c1": "h2"})
    bd = breakdown(recs, clocks, path=["c1", "h2", "h1"])
    segs = {(s["from"], s["to"]): s["duration_ns"] for s in bd["segments"]}
    assert bd["retrans"] and not bd["complete"]
    assert segs[("h2:dev_rx@lsd-1b", "h2:ip_pre")] == 18568
    assert segs[("h2:ip_pre", "h2:dev_rx@br0")] == 1362
    assert segs[("h2:dev_rx@br0", "h2:ip_post")] == 1843
    assert segs[("h2:dev_xmit@lsd-0b", "h1:dev_rx@lsd-0a")] == 8744955 - 8_742_000
    assert all(0 < s["duration_ns"] < 30_000 for s in bd["segments"])


# -- output snapshot: the fast path must reproduce the original outputs exactly -----------
# tests/stream/breakdown_golden.json holds a digest per case of what the original
# (pre-optimisation) segments/windows/influx code produced for a varied, seeded corpus:
# breakdown dicts (key order, floats, segment order), sample lines, window folds and
# window lines, and the Avro encoding of each breakdown. Regenerate it ONLY for an
# intended change of output: LSX_REGEN_GOLDEN=1 pytest tests/stream/test_segments.py

GOLDEN = Path(__file__).with_name("breakdown_golden.json")
_FLOWS = [{"proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
           "sport": 40000, "dport": 5201},
          {"proto": "udp", "family": 6, "src": "fd00::1", "dst": "fd00:0:0:2::2",
           "sport": 5353, "dport": 65535},
          {"proto": "tcp", "family": 4, "src": "10.3.0.3", "dst": "10.1.0.1",
           "sport": 1, "dport": 80}]
_PATHS = [["h1", "c1"], ["h1", "h2", "c1"], ["c1", "h2", "h1"], ["h1", "r1", "r2", "h2"]]


def _case(rng: random.Random) -> tuple[list[dict], ClockView, list[str] | None]:
    """One sampled byte's records, mangled the ways real ones are: jittered durations,
    clock offsets and drift, missing points and hosts, br_netfilter, resent copies, split
    records, shuffled hits, odd device names."""
    path = rng.choice(_PATHS)
    offsets = {h: rng.choice([0, rng.randrange(-9_000_000, 9_000_000)]) for h in path}
    spec = PathSpec(path, step_ns=rng.choice([1, 700, 9000]), offsets_ns=offsets,
                    flow=rng.choice(_FLOWS))
    t0 = rng.choice([10**12, 2**62, 5_000_000, rng.randrange(2**40)])
    recs = sample_records(spec, seq=rng.randrange(2**32), t0_ref_ns=t0)
    for r in recs:
        for h in r["hits"]:
            h["ts_ns"] += rng.randrange(-800, 800) if rng.random() < 0.3 else 0
            if h["dev"] and rng.random() < 0.1:
                h["dev"] = rng.choice(["br0", "vëth-ü", "lsd-1b", "eth0"])
            if h["dev"] is None and rng.random() < 0.05:
                h["dev"] = "lsd-1a"
    if rng.random() < 0.25:          # points a kernel lacks, or lost
        r = rng.choice(recs)
        del r["hits"][rng.randrange(len(r["hits"]))]
    if rng.random() < 0.15:          # br_netfilter on a forwarder or receiver
        r = rng.choice(recs[1:])
        pre = next((h for h in r["hits"] if h["point"] == "ip_pre"), None)
        if pre:
            r["hits"].append(dict(pre, point="dev_rx", dev="br0",
                                  ts_ns=pre["ts_ns"] + rng.choice([-50, 400]), ifindex=7))
    if rng.random() < 0.1:           # an xdp point before dev_rx
        r = rng.choice(recs[1:])
        rx = next((h for h in r["hits"] if h["point"] == "dev_rx"), None)
        if rx:
            r["hits"].append(dict(rx, point="xdp", ts_ns=rx["ts_ns"] - 100))
    if rng.random() < 0.2:           # a resent copy crossing some hosts again
        gap = rng.choice([50_000, 15_000_000, -200_000_000])
        for r in list(recs):
            if rng.random() < 0.6:
                hits = [dict(h, ts_ns=h["ts_ns"] + gap) for h in r["hits"]
                        if rng.random() < 0.7]
                if rng.random() < 0.5:
                    r["hits"] = r["hits"] + hits
                else:
                    recs.append(dict(r, hits=hits, complete=False))
    if rng.random() < 0.1:           # linger flush: one host's record split, overlapping
        r = rng.choice(recs)
        cut = rng.randrange(len(r["hits"]) + 1)
        recs.append(dict(r, hits=r["hits"][max(0, cut - 1):]))
        r["hits"] = r["hits"][:cut]
    if rng.random() < 0.15 and len(recs) > 1:   # a host never reported
        recs.pop(rng.randrange(len(recs)))
    for r in recs:
        r["retrans"] = rng.random() < 0.05
        if rng.random() < 0.3:
            rng.shuffle(r["hits"])
    rng.shuffle(recs)
    recs = [r for r in recs if r["hits"]] or recs[:1]
    manager = rng.choice(["mgr", path[0], path[-1], None])
    models = {h: dict(clock_model(h, offsets[h], manager=manager or "mgr",
                                  bound_ns=rng.choice([0.0, 300.0, 2500.5])),
                      drift_ppm=rng.choice([0.0, 0.0, 12.5, -3.25]),
                      ref_ns=rng.choice([0, t0]))
              for h in path if rng.random() < 0.8}
    clock_hosts = {"c1": "h2"} if rng.random() < 0.2 else None
    return recs, ClockView(models, manager, clock_hosts), rng.choice([path, path, None,
                                                                       path[:-1]])


def _canonical(sketch: dict) -> dict:
    """A sketch's dict with its buckets in index order (their order carries no meaning)."""
    return {**sketch, "p": sorted(sketch["p"]), "ng": sorted(sketch["ng"])}


def _outputs(n: int = 600, seed: int = 20261125) -> dict[str, str]:
    from latscope.schemas import codec
    from latscope.sinks.influx import sample_line, window_line
    from latscope.stream.windows import WindowPolicy, Windows

    rng = random.Random(seed)
    out: dict[str, str] = {}
    windows = Windows(WindowPolicy(interval_s=1.0, lateness_s=0.5))
    table: dict = {}
    batch = []
    for i in range(n):
        recs, clocks, path = _case(rng)
        bd = breakdown(recs, clocks, path=path)
        flow = rng.choice(["f1", "f 2,=x", "tcp:[fd00::1]:5353>[fd00::2]:1"])
        wall = 10**18 + rng.randrange(4 * 10**9)
        extra = rng.choice([{}, {"run": "lsxe-1"}])
        text = repr(bd) + sample_line(bd, flow, wall, extra) + codec.encode("Breakdown", bd).hex()
        out[f"bd{i}"] = hashlib.sha256(text.encode()).hexdigest()[:16]
        batch.append((i % 4, bd, flow, wall))
        if len(batch) == 37 or i == n - 1:
            writes = windows.fold(batch, table)
            dicts = {k: {**v, "s": _canonical(Sketch.of(v["s"]).to_dict())}
                     for k, v in writes.items()}
            out[f"fold{i}"] = hashlib.sha256(repr(sorted(dicts.items())).encode()).hexdigest()[:16]
            table.update(writes)
            batch = []
    lines = [window_line(v["tags"], Sketch.of(v["s"]), v["w"], {"run": "x"}, v["pos"])
             for _, v in sorted(table.items())]
    out["windows"] = hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16]
    return out


def test_outputs_match_the_snapshot() -> None:
    got = _outputs()
    if os.environ.get("LSX_REGEN_GOLDEN"):
        GOLDEN.write_text(json.dumps(got, indent=0) + "\n")
    want = json.loads(GOLDEN.read_text())
    differ = [k for k in want if got.get(k) != want[k]]
    assert not differ, f"{len(differ)} of {len(want)} outputs changed, first: {differ[:10]}"
    assert got.keys() == want.keys()


def test_known_paths_c_timestamps_equal_the_general_paths() -> None:
    # plain_refs (C, for a path whose shape is cached) against _refs (Python, any sample):
    # the same reference timestamps, with drift, int and float offsets, ties and large ts.
    from latscope.stream import segments as seg
    from latscope.stream._native import plain_refs

    rng = random.Random(21)
    for _ in range(400):
        path = rng.choice([["h1", "c1"], PATH, ["c1", "h2", "h1"]])
        offsets = {h: rng.choice([0, 7, -10**7, 2**40]) for h in path}
        spec = PathSpec(path, step_ns=rng.choice([0, 1, 900, 70_000]), offsets_ns=offsets)
        recs = sample_records(spec, seq=rng.randrange(2**32),
                              t0_ref_ns=rng.choice([0, 10**12, 2**52 + 1, 2**60]))
        models = {}
        for h, o in offsets.items():
            if rng.random() < 0.8:
                m = clock_model(h, 0.0, ref_ns=rng.randrange(10**13))
                m["offset_ns"] = rng.choice([o, o + 0.5, float(o), o - 3])   # int or float
                m["drift_ppm"] = rng.choice([0.0, 3.25, -40.0])
                models[h] = m
        clocks = ClockView(models, rng.choice(["mgr", path[0]]))
        by_host = seg.dedup_hits(recs)
        hosts = seg.host_order(by_host, clocks, path)
        shapes = tuple(seg._shape(h, by_host[h]) for h in hosts)
        assert all(s.plain for s in shapes)
        plan = seg._Plan(shapes)
        refs, swapped = plain_refs([by_host[h] for h in hosts], plan.orders, plan.rx_pairs,
                                   plan.tie_swaps, [clocks.ref_params(h) for h in hosts])
        want, points, _ = seg._refs(hosts, shapes, by_host, clocks)
        assert refs == want
        assert [type(r) for r in refs] == [int] * len(want)
        assert swapped == plan_swaps(plan, points, shapes)


def plan_swaps(plan, points, shapes) -> int:
    """Which hosts' receive pairs the general path put the other way round."""
    out, at = 0, 0
    for i, shape in enumerate(shapes):
        order = [shape.points[k] for k in shape.order]
        mine = points[at:at + len(order)]
        if mine != order:
            out |= 1 << i
        at += len(order)
    return out


def test_known_paths_c_timestamps_leave_odd_input_to_the_general_path() -> None:
    from latscope.stream._native import plain_refs

    hits = [[{"ts_ns": 5}, {"ts_ns": 4.0}]]
    assert plain_refs(hits, ((0, 1),), (-1,), (False,), [None]) is NotImplemented
    hits = [[{"ts_ns": 5}, {"ts_ns": 2**64}]]
    assert plain_refs(hits, ((0, 1),), (-1,), (False,), [None]) is NotImplemented
    # and a breakdown of such records is still made (by the general path)
    recs = sample_records(PathSpec(["h1", "c1"]), seq=1, t0_ref_ns=10**12)
    recs[0]["hits"][0]["ts_ns"] = float(recs[0]["hits"][0]["ts_ns"])
    bd = breakdown(recs, ClockView({}, "h1"), path=["h1", "c1"])
    assert bd["complete"] and len(bd["segments"]) == sum(len(r["hits"]) for r in recs) - 1


def test_a_records_shape_is_found_by_identity_and_by_value() -> None:
    from latscope.stream import segments as seg
    from latscope.stream._native import shape_cached

    hits = [{"point": "ip_out", "ts_ns": 1, "dev": None},
            {"point": "dev_queue", "ts_ns": 2, "dev": "eth0"},
            {"point": "dev_xmit", "ts_ns": 3, "dev": "eth0"}]
    first = seg._shape("h1", hits)
    assert shape_cached("h1", hits) is first and seg._shape("h1", hits) is first
    # equal names in other objects: found by value, the same shape
    fresh = [{"point": "".join(h["point"]), "ts_ns": 9,
              "dev": None if h["dev"] is None else "".join(["et", "h0"])} for h in hits]
    assert fresh[1]["dev"] is not hits[1]["dev"]
    assert seg._shape("".join(["h", "1"]), fresh) is first
    # another device, or a missing dev key (None), is what the names say
    other = [dict(h) for h in hits]
    other[2]["dev"] = "eth1"
    assert seg._shape("h1", other).points[2].dev == "eth1"
    no_dev = [{k: v for k, v in h.items() if k != "dev" or v is not None} for h in hits]
    assert seg._shape("h1", no_dev) is first
