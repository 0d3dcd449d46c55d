"""`latscope doctor`: which hook serves each observation point on this kernel, or why none
can. Every answer comes from really loading and attaching the probe (then detaching it)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

from latscope.bpf import libbpf
from latscope.producers.probes import (
    NF_HOOKS,
    OBJECTS,
    POINT_HOOKS,
    RETRANS_HOOK,
    cgroup2_root,
)
from latscope.schemas.records import POINTS

BTF = Path("/sys/kernel/btf/vmlinux")
XDP_OPT_IN = ("opt-in (`latscope agent --xdp`): XDP on a veth switches it to NAPI/GRO receive, "
              "changing the path being measured, and a device holds one XDP link (the sync "
              "responder's); without it dev_rx is the earliest RX point")


def _load(name: str) -> tuple[libbpf.BpfObject | None, str | None]:
    try:
        obj = libbpf.BpfObject.build(name)
        if name == "netfilter":
            obj.set_program_type("ip_point", libbpf.PROG_TYPE_NETFILTER, libbpf.ATTACH_NETFILTER)
        obj.load()
        return obj, None
    except (libbpf.BpfError, OSError) as e:
        return None, f"loading {name}.bpf.o failed: {e}"


def _tcp_tx_fallback_reason() -> str:
    obj, err = _load("capability")
    if obj is not None:
        try:
            obj.attach("tcp_tx_fentry")
            why = "fentry/__tcp_transmit_skb loads, but this agent has no fentry probe"
        except libbpf.BpfError as e:
            why = f"fentry/__tcp_transmit_skb: {e}"
        finally:
            obj.close()
    else:
        why = err or ""
        if "Operation not permitted" in why:
            why = "fentry/__tcp_transmit_skb refused (EPERM)"
    kprobes = Path("/sys/kernel/tracing/kprobe_events").exists() or Path(
        "/sys/kernel/debug/tracing/kprobe_events").exists()
    return (f"no tracepoint inside __tcp_transmit_skb; {why}; kprobes "
            f"{'present' if kprobes else 'absent (CONFIG_KPROBES off)'}")


def _tcp_tx(objs: dict) -> dict:
    """sock_ops header-option callbacks (the preferred hook); else why not, and the merge."""
    obj_name, prog, hook = POINT_HOOKS["tcp_tx"]
    obj, err = objs[obj_name]
    try:
        if obj is None:
            raise libbpf.BpfError(0, err or "not loaded")
        obj.attach_cgroup(prog, cgroup2_root()).detach()
        return {"hook": hook, "available": True,
                "note": "adds 4 TCP option bytes (NOPs) to the segments of covered sockets"}
    except libbpf.BpfError as e:
        return {"hook": None, "available": False, "merged_into": "sock_send",
                "reason": f"sockops: {e}; {_tcp_tx_fallback_reason()}. The socket and TCP "
                          "transmit segments are reported merged (sock_send -> ip_out)."}


def _xdp() -> dict:
    obj, err = _load("xdp")
    if obj is None:
        return {"hook": None, "available": False, "reason": err}
    obj.close()
    return {"hook": "xdp.frags (native, generic fallback)", "available": True,
            "opt_in": True, "reason": XDP_OPT_IN}


def run() -> dict:
    libbpf.quiet_libbpf()
    out: dict = {"kernel": platform.release(), "btf": BTF.exists(), "root": os.geteuid() == 0,
                 "points": {}, "extra": {}}
    objs: dict[str, tuple[libbpf.BpfObject | None, str | None]] = {n: _load(n) for n in OBJECTS}
    try:
        for point in POINTS:
            if point == "tcp_tx":
                out["points"][point] = _tcp_tx(objs)
                continue
            if point == "xdp":
                out["points"][point] = _xdp()
                continue
            obj_name, prog, hook = POINT_HOOKS[point]
            obj, err = objs[obj_name]
            entry: dict = {"hook": hook, "available": False}
            if obj is None:
                entry["reason"] = err
            else:
                try:
                    if point in NF_HOOKS:
                        link = obj.attach_netfilter(prog, libbpf.NFPROTO_IPV4, NF_HOOKS[point])
                        entry["per_netns"] = True
                    else:
                        link = obj.attach(prog)
                    link.detach()
                    entry["available"] = True
                except libbpf.BpfError as e:
                    entry["reason"] = str(e)
            out["points"][point] = entry
        obj_name, prog, hook = RETRANS_HOOK
        obj, err = objs[obj_name]
        entry = {"hook": hook, "available": False}
        try:
            if obj is None:
                raise libbpf.BpfError(0, err or "not loaded")
            obj.attach(prog).detach()
            entry["available"] = True
        except libbpf.BpfError as e:
            entry["reason"] = str(e)
        out["extra"]["retransmit"] = entry
    finally:
        for obj, _ in objs.values():
            if obj is not None:
                obj.close()
    return out


def render(report: dict) -> str:
    lines = [f"kernel {report['kernel']}, BTF {'yes' if report['btf'] else 'NO'}"
             f"{'' if report['root'] else ', not root (probes need root)'}"]
    for point, e in {**report["points"], **report["extra"]}.items():
        mark = "ok " if e["available"] else "-- "
        hook = e.get("hook") or "(none)"
        lines.append(f"  {mark}{point:10s} {hook}" + (f"\n       {e['reason']}"
                                                       if e.get("reason") else ""))
    return "\n".join(lines)
