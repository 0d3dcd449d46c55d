"""What the kernel holds, by its own listings (bpftool, ip link): the truth the kill tests
compare a killed process's BPF objects with."""

from __future__ import annotations

import json
import subprocess
import time

from latscope.bpf import libbpf

KINDS = {"link": "link_id", "prog": "prog_id", "map": "map_id"}


def kernel_ids(kind: str) -> set[int]:
    """Every BPF object of a kind in the kernel now; a walk that fails because an object
    went away mid-walk (another process detaching) is retried."""
    for _ in range(10):
        r = subprocess.run(["bpftool", "-j", kind, "show"], capture_output=True, text=True)
        if r.returncode == 0:
            return {o["id"] for o in json.loads(r.stdout or "[]")}
        time.sleep(0.05)
    raise RuntimeError(f"bpftool {kind} show kept failing: {r.stderr.strip()[:300]}")


def held(pid: int) -> dict[str, set[int]]:
    """The links, programs and maps a process holds by fd."""
    return {k: libbpf.held_ids(pid, key) for k, key in KINDS.items()}


def xdp_devices(ns: str) -> list[str]:
    links = json.loads(subprocess.run(["ip", "-n", ns, "-j", "link", "show"], check=True,
                                      capture_output=True, text=True).stdout)
    return [lk["ifname"] for lk in links if "xdp" in lk]


def left_after_kill(objects: dict[str, set[int]], namespaces: list[str],
                    timeout: float = 10) -> tuple[dict[str, list], float]:
    """What of ``objects`` the kernel still lists, and which devices of ``namespaces`` keep
    an XDP program, once the kernel has freed what it will (it does so asynchronously);
    and how long that took."""
    started = time.monotonic()
    while True:
        left: dict[str, list] = {k: sorted(ids & kernel_ids(k)) for k, ids in objects.items()}
        left["xdp"] = [f"{ns}:{d}" for ns in namespaces for d in xdp_devices(ns)]
        if not any(left.values()) or time.monotonic() > started + timeout:
            return left, time.monotonic() - started
        time.sleep(0.1)
