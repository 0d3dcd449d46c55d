"""`latscope doctor`: which hook serves each observation point on this kernel, why the
candidates before it were passed over, and how the ones after it would fare. Every answer
comes from really loading and attaching the probe (then detaching it): the same start-up
walk the agent does (producers/probes.py), over the candidates of schemas/points.py, with
no namespace covered so nothing is reported meanwhile."""

from __future__ import annotations

import os
import platform
from collections.abc import Iterable

from latscope.bpf import libbpf
from latscope.bpf.btf import VMLINUX_BTF
from latscope.producers.probes import DROPS, RETRANS, XDP, Choice, Probes
from latscope.schemas.points import BY_NAME, DEFAULT_POINTS, POINTS

BTF = VMLINUX_BTF
XDP_OPT_IN = ("opt-in (`latscope agent --xdp`): XDP on a veth switches it to NAPI/GRO receive, "
              "changing the path being measured, and a device holds one XDP link (the sync "
              "responder's); without it dev_rx is the earliest RX point")


def _entry(choice: Choice) -> dict:
    """The §8 shape (hook, available, reason) plus the walk: skipped and fallbacks."""
    out: dict = {"hook": choice.hook.name if choice.hook else None,
                 "available": choice.hook is not None}
    if choice.hook is None:
        out["reason"] = choice.reason
    out["skipped"] = [{"hook": h, "reason": r} for h, r in choice.skipped]
    out["fallbacks"] = [{"hook": h, "available": r is None, **({"reason": r} if r else {})}
                        for h, r in choice.fallbacks]
    return out


def _xdp(skip: Iterable[str]) -> dict:
    """Loaded, not attached: attaching would change every device's receive path."""
    token = XDP.skipped_by(skip)
    if token is not None:
        return _entry(Choice(None, [(XDP.name, f"forced off (--skip-hook {token})")]))
    try:
        libbpf.BpfObject.build(XDP.obj).load().close()
    except (libbpf.BpfError, OSError) as e:
        return _entry(Choice(None, [(XDP.name, f"loading {XDP.obj}.bpf.o failed: {e}")]))
    return {**_entry(Choice(XDP)), "opt_in": True, "reason": XDP_OPT_IN}


def run(skip_hooks: Iterable[str] = ()) -> dict:
    libbpf.quiet_libbpf()
    skip = tuple(skip_hooks)
    out: dict = {"kernel": platform.release(), "btf": BTF.exists(), "root": os.geteuid() == 0,
                 "points": {}, "extra": {}}
    probes = Probes(netns=[None], points=DEFAULT_POINTS, skip_hooks=skip, dry=True)
    try:
        try:
            probes.load()
            probes.attach()
            error = None
        except (libbpf.BpfError, OSError) as e:
            error = f"loading the shared maps failed: {e}"
        for point in POINTS:
            if point == "xdp":
                out["points"][point] = _xdp(skip)
                continue
            choice = probes.choices.get(point) or Choice(None, [("(all)", error or "not tried")])
            entry = _entry(choice)
            if choice.hook is not None and choice.hook.kind == "netfilter":
                entry["per_netns"] = True
            if choice.hook is not None and choice.hook.note:
                entry["note"] = choice.hook.note
            if point == "tcp_tx" and choice.hook is None:
                entry["merged_into"] = "sock_send"
                entry["reason"] += f". {BY_NAME[point].note}"
            out["points"][point] = entry
        for name in (RETRANS, DROPS):     # not points: the resend marker, the drop reasons
            out["extra"][name] = _entry(
                probes.choices.get(name) or Choice(None, [("(all)", error or "not tried")]))
    finally:
        probes.close()
    return out


def render(report: dict) -> str:
    lines = [f"kernel {report['kernel']}, BTF {'yes' if report['btf'] else 'NO'}"
             f"{'' if report['root'] else ', not root (probes need root)'}"]
    for point, e in {**report["points"], **report["extra"]}.items():
        mark = "ok " if e["available"] else "-- "
        lines.append(f"  {mark}{point:10s} {e.get('hook') or '(none)'}")
        if e.get("note"):
            lines.append(f"       {e['note']}")
        for s in e.get("skipped", ()):
            lines.append(f"       skipped {s['hook']}: {s['reason']}")
        for f in e.get("fallbacks", ()):
            lines.append(f"       fallback {f['hook']}: "
                         f"{'available' if f['available'] else f['reason']}")
        if e.get("reason") and (e["available"] or e.get("merged_into") or not e.get("skipped")):
            lines.append(f"       {e['reason']}")
    return "\n".join(lines)

