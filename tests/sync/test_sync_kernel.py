"""Clock sync on the real kernel: XDP responders with injected clocks in network namespaces,
the manager's tracepoint + XDP stamps, over a veth, a bridge and a routed hop, IPv4 and IPv6."""

from __future__ import annotations

import os
import socket
import statistics
import time

import pytest
from sync_testnet import TARGETS, SyncNet

from latscope.sync import wire
from latscope.sync.estimator import EstimatorConfig, Model
from latscope.sync.keys import SyncKeys
from latscope.sync.manager import Manager, Target

pytestmark = pytest.mark.root

RUN_S = 6.0
WARMUP_S = 1.0


@pytest.fixture(scope="module")
def sync_run(sync_net: SyncNet) -> dict:
    """One manager run over every target; every model it fits, with the true offset."""
    net = sync_net.net
    fits: dict[str, list[tuple[float, Model, float]]] = {n: [] for n in TARGETS}
    start = time.monotonic()

    def on_model(name: str, m: Model) -> None:
        truth = net.clock(TARGETS[name][0]).true_offset(m.ref_ns)
        fits[name].append((time.monotonic() - start, m, truth))

    mgr = Manager([Target(n, addr) for n, (_h, addr, _) in TARGETS.items()], sync_net.keys,
                  netns=net.ns_name("mgr"), interval_s=0.02, burst=2,
                  estimator=EstimatorConfig(window_ns=3_000_000_000, bucket_ns=20_000_000),
                  on_model=on_model)
    with mgr:
        # Forged replies from h1's namespace while the manager runs: a wrong key, and the
        # right key with a probe id the manager never sent.
        with net.enter("h1"):
            forger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        forger.bind(("10.92.1.2", 51111))
        for _ in range(3):
            forger.sendto(wire.probe_payload(1, SyncKeys.generate(), kind=wire.KIND_REPLY),
                          ("10.92.1.1", 40000))
        for _ in range(2):
            forger.sendto(wire.probe_payload(1, sync_net.keys, kind=wire.KIND_REPLY),
                          ("10.92.1.1", 40000))
        forger.close()
        mgr.run(duration_s=RUN_S)
        hosts = {n: (st.sent, st.samples, st.lost) for n, st in mgr.hosts.items()}
        kernel = mgr.counters()
    return {"fits": fits, "hosts": hosts, "kernel": kernel}


@pytest.mark.parametrize("name", list(TARGETS))
def test_offset_tracks_injected_truth(sync_run: dict, name: str) -> None:
    sent, samples, _lost = sync_run["hosts"][name]
    assert sent > 200
    assert samples >= 0.9 * sent, f"{name}: {samples}/{sent} exchanges completed"
    fits = [(m, truth) for t, m, truth in sync_run["fits"][name] if t >= WARMUP_S]
    assert len(fits) > 50, f"{name}: only {len(fits)} models after warm-up"
    errors = [m.offset_ns - truth for m, truth in fits]
    outside = [(e, m.error_bound_ns) for e, (m, _) in zip(errors, fits, strict=True)
               if abs(e) > m.error_bound_ns]
    assert not outside, f"{name}: {len(outside)}/{len(fits)} estimates outside their bound, " \
                        f"e.g. error {outside[0][0]:.0f} ns > bound {outside[0][1]:.0f} ns"
    abs_err = sorted(abs(e) for e in errors)
    p99 = abs_err[min(len(abs_err) - 1, int(0.99 * len(abs_err)))]
    assert p99 <= 50_000, f"{name}: p99 |error| {p99:.0f} ns"
    host = TARGETS[name][0]
    last, _ = fits[-1]
    true_drift = {  # topology.yaml
        "h1": 50.0, "h2": -50.0, "h3": 20.0}[host]
    assert last.drift_ppm == pytest.approx(true_drift, abs=1.0)
    assert last.negative_delays == 0
    print(f"{name} ({TARGETS[name][2]}): median |error| {statistics.median(abs_err):.0f} ns, "
          f"p99 {p99:.0f} ns, last bound {last.error_bound_ns:.0f} ns, "
          f"min delay {last.min_delay_ns:.0f} ns")


def test_kernel_counters_balance(sync_run: dict) -> None:
    k = sync_run["kernel"]
    sent = sum(s for s, _, _ in sync_run["hosts"].values())
    assert k["t1"] == sent          # every probe stamped on departure
    assert k["samples"] == sum(n for _, n, _ in sync_run["hosts"].values())
    assert k["ringbuf_full"] == 0
    # The forged replies: counted and dropped, never turned into samples.
    assert k["bad_mac"] == 3
    assert k["no_t1"] == 2
    assert k["replies"] == k["samples"] + 5


def _probe_from(sync_net: SyncNet, src: str, dst: str, keys: SyncKeys,
                payload: bytes | None = None) -> bytes | None:
    """Send one probe from the manager's namespace with source ``src``; the reply or None."""
    fam = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with sync_net.net.enter("mgr"):
        s = socket.socket(fam, socket.SOCK_DGRAM)
    try:
        s.bind((src, 0))
        s.settimeout(0.5)
        s.sendto(payload if payload is not None else wire.probe_payload(_random_id(), keys),
                 (dst, 51111))
        try:
            return s.recv(2048)
        except TimeoutError:
            return None
    finally:
        s.close()


def _random_id() -> int:
    return int.from_bytes(os.urandom(8), "little")


@pytest.mark.parametrize("family", [4, 6])
def test_spoofed_probes_are_counted_and_never_answered(sync_net: SyncNet, sync_run: dict,
                                                        family: int) -> None:
    del sync_run  # runs after the manager has detached: replies now reach user space
    net, r = sync_net.net, sync_net.responders["h1"]
    good_src, dst = ("10.92.1.1", "10.92.1.2") if family == 4 else ("fd92:1::1", "fd92:1::2")
    spoof_src = "10.92.1.9" if family == 4 else "fd92:1::9"
    with net.ipr("mgr") as ipr:
        idx = ipr.link_lookup(ifname=net.ifname("mgr", "h1"))[0]
        ipr.addr("add", index=idx, address=spoof_src, prefixlen=24 if family == 4 else 64,
                 **({"IFA_FLAGS": 0x80} if family == 6 else {}))  # IFA_F_NODAD
    before = r.counters()

    # Positive control: the allow-listed source with the key is answered, stamped with
    # the host's injected clock, so the silence below means something.
    sent_at = time.clock_gettime_ns(time.CLOCK_MONOTONIC)
    reply = _probe_from(sync_net, good_src, dst, sync_net.keys)
    assert reply is not None
    p = wire.decode_probe(reply)
    assert p.kind == wire.KIND_REPLY and p.t3_ns >= p.t2_ns and wire.mac_ok(p, sync_net.keys)
    assert abs((p.t2_ns - sent_at) - net.clock("h1").true_offset(sent_at)) < 50_000_000

    assert _probe_from(sync_net, good_src, dst, SyncKeys.generate()) is None    # wrong key
    assert _probe_from(sync_net, spoof_src, dst, sync_net.keys) is None          # wrong source
    assert _probe_from(sync_net, good_src, dst, sync_net.keys, b"LSYN") is None  # malformed
    after = r.counters()
    delta = {k: after[k] - before[k] for k in after}
    assert delta == {"probes": 4, "answered": 1, "bad_source": 1, "bad_mac": 1,
                     "malformed": 1, "stale_key": 0, "replay": 0}
