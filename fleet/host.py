"""One server's side of a rollout, over an SSH connection: install the bundle into a venv
under its install directory (``pip --no-index``), write its config and services, run its
supervisor; read its status; stop it and check that nothing of LatScope is left attached.

Layout under the install directory: ``wheels/`` (the bundle, ``BUNDLE`` its digest),
``venv/``, ``etc/`` (latscope.yaml, services.json, secrets 0600), ``run/`` (pid files,
rotated logs, the supervisor's status.json, the agent's status file).
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable
from typing import Any

from latscope import __version__
from latscope.fleet.bundle import Bundle
from latscope.fleet.plan import SUPERVISOR_MODULE, HostPlan, digest
from latscope.fleet.ssh import HostError, Remote

Progress = Callable[[str], None]
STOP_WAIT_S = 30


def _q(s: str) -> str:
    return shlex.quote(s)


def install(r: Remote, plan: HostPlan, bundle: Bundle, progress: Progress) -> bool:
    """The bundle in ``DIR/venv``; False if it was there already (same digest)."""
    d = plan.dir
    have = r.read_text(f"{d}/wheels/BUNDLE")
    if have is not None and have.strip() == bundle.digest and r.size(f"{d}/venv/bin/latscope"):
        return False
    r.run(f"mkdir -p {_q(d)}/wheels {_q(d)}/etc {_q(d)}/run {_q(d)}/cache && "
          f"chmod 700 {_q(d)}/etc", check=True)
    py = r.run("python3 -c 'import sys; print(\"%d%d\" % sys.version_info[:2])'")
    tag = bundle.latscope.name.split("-")[2]           # cp311
    if py.rc != 0 or f"cp{py.out.strip()}" != tag:
        raise HostError(f"install failed: the wheel is for {tag}, the server's python3 is "
                        f"{'missing' if py.rc else 'cp' + py.out.strip()}")
    for i, w in enumerate(bundle.wheels, 1):
        if r.size(f"{d}/wheels/{w.name}") != w.stat().st_size:
            progress(f"uploading wheels {i}/{len(bundle.wheels)}")
            r.put_file(w, f"{d}/wheels/{w.name}")
    progress("installing")
    venv = f"{d}/venv"
    pip = f"{_q(venv)}/bin/python -m pip -q install --no-index --no-compile --find-links {_q(d)}/wheels"
    r.run(f"test -x {_q(venv)}/bin/python || python3 -m venv {_q(venv)}", check=True)
    r.run(f"{pip} {_q(d)}/wheels/{_q(bundle.latscope.name)}", check=True)
    # Same version, new build: replace LatScope itself.
    r.run(f"{pip} --no-deps --force-reinstall {_q(d)}/wheels/{_q(bundle.latscope.name)}",
          check=True)
    r.put_bytes(f"{bundle.digest}\n".encode(), f"{d}/wheels/BUNDLE")
    return True


def supervisor_pid(r: Remote, d: str) -> int | None:
    """The supervisor of ``d`` if it is alive and really ours (its command line names it)."""
    pid = (r.read_text(f"{d}/run/supervisor.pid") or "").strip()
    if not pid.isdigit():
        return None
    cmd = r.read_text(f"/proc/{pid}/cmdline") or ""
    return int(pid) if SUPERVISOR_MODULE in cmd and d in cmd else None


def services_status(r: Remote, d: str) -> tuple[int | None, dict[str, Any]]:
    pid = supervisor_pid(r, d)
    sup = json.loads(r.read_text(f"{d}/run/status.json") or "{}") if pid else {}
    if sup.get("supervisor_pid") != pid:
        sup = {}      # an earlier supervisor's, not yet rewritten by this one
    return pid, sup.get("services", {})


def configure(r: Remote, d: str, files: dict[str, tuple[bytes, int]],
              services: dict[str, dict]) -> list[str]:
    """Write ``etc/`` files and ``services.json``; the services that changed (the running
    supervisor restarts exactly those on SIGHUP), or all of them when it was not running."""
    for name, (data, mode) in files.items():
        r.put_bytes(data, f"{d}/etc/{name}", mode)
    old = json.loads(r.read_text(f"{d}/etc/services.json") or '{"services": {}}')["services"]
    pid = supervisor_pid(r, d)
    changed = [n for n, s in services.items() if old.get(n) != s] + \
        [n for n in old if n not in services]
    if pid is not None and not changed:
        return []
    text = json.dumps({"services": services}, indent=1, sort_keys=True)
    r.put_bytes(text.encode(), f"{d}/etc/services.json")
    if pid is not None:
        r.run(f"kill -HUP {pid}", sudo=True, check=True)
        return changed
    start_supervisor(r, d)
    return list(services)


def unit_name(d: str) -> str:
    """The systemd unit that runs the supervisor of install directory ``d``."""
    return f"latscope-{digest(d)[:12]}.service"


def systemd(r: Remote) -> bool:
    """PID 1 is systemd (its own test: sd_booted())."""
    return r.run("test -d /run/systemd/system").rc == 0


def start_supervisor(r: Remote, d: str) -> None:
    """Where PID 1 is systemd, as a transient unit restarted on failure (its cgroup holds
    every service, so a supervisor that dies takes none of them along unseen); elsewhere
    detached (``setsid -f``: its own session, no fd of this SSH channel), so it outlives
    the connection and the login session."""
    argv = f"{_q(r.python(d))} -m {SUPERVISOR_MODULE} {_q(d)}"
    log = f"{d}/run/supervisor.log"
    if systemd(r):
        unit = unit_name(d)
        props = ["Restart=on-failure", "RestartSec=2", "KillMode=mixed",
                 f"TimeoutStopSec={STOP_WAIT_S}", f"WorkingDirectory={d}",
                 f"StandardOutput=append:{log}", f"StandardError=append:{log}"]
        cmd = (f"mkdir -p {_q(d)}/run && (systemctl reset-failed {unit} 2>/dev/null; true) && "
               f"systemd-run --quiet --collect --unit={unit} --description={_q('LatScope ' + d)} "
               + " ".join(f"--property={_q(p)}" for p in props) + f" {argv}")
    else:
        cmd = (f"mkdir -p {_q(d)}/run && cd {_q(d)} && setsid -f {argv} >>{_q(log)} 2>&1 "
               "</dev/null")
    r.run(cmd, sudo=True, check=True, timeout=30)


def unit_status(r: Remote, d: str) -> dict[str, Any] | None:
    """The supervisor's unit as systemd sees it (None without systemd, where systemctl
    fails, or without the unit)."""
    res = r.run(f"systemctl show --property=LoadState,ActiveState,NRestarts {unit_name(d)}")
    kv = dict(line.split("=", 1) for line in res.out.splitlines() if "=" in line)
    if res.rc != 0 or kv.get("LoadState") in (None, "not-found"):
        return None     # a transient unit is gone once stopped (--collect)
    return {"unit": unit_name(d), "active": kv.get("ActiveState"),
            "restarts": int(kv.get("NRestarts") or 0)}


def status(r: Remote, d: str) -> dict[str, Any]:
    out: dict[str, Any] = {"reachable": True, "install_dir": d}
    ver = r.run(f"{_q(d)}/venv/bin/latscope --version")
    out["version"] = ver.out.strip().split()[-1] if ver.rc == 0 else None
    out["supervisor_pid"], services = services_status(r, d)
    out["services"] = services
    out["unit"] = unit_status(r, d)
    agent = json.loads(r.read_text(f"{d}/run/agent.status.json") or "null")
    if agent and services.get("agent", {}).get("running"):
        c = agent.get("counters", {})
        out["agent"] = {"points": agent.get("points"), "netns": agent.get("netns"),
                        "uncovered": agent.get("uncovered", []),
                        "names": agent.get("names", {}),
                        "stride": agent.get("stride", {}),
                        "published": c.get("published"),
                        "ringbuf_drops": c.get("ringbuf_drops"),
                        "failed_deliveries": c.get("failed_deliveries"),
                        "rate_capped": c.get("rate_capped")}
    out["up_to_date"] = out["version"] == __version__
    return out


# Run on the server by its venv's Python: what of LatScope the kernel holds for this host:
# XDP and tc BPF on its interfaces (per network namespace), the ids of every loaded BPF
# program and link (bpftool), and those the given pids hold open (their fdinfo: prog_id /
# link_id; ids are global and a shared kernel holds other hosts' too).
_KERNEL = r"""
import json, os, subprocess, sys
pids = json.loads(sys.argv[1])
def j(*a):
    r = subprocess.run(a, capture_output=True, text=True)
    return json.loads(r.stdout or "[]") if r.returncode == 0 else []
attached = []
for l in j("ip", "-j", "-d", "link", "show"):
    if l.get("xdp"):
        attached.append(f"XDP on {l['ifname']}")
    for kind in ("ingress", "egress"):
        for f in j("tc", "-j", "filter", "show", "dev", l["ifname"], kind):
            if f.get("kind") == "bpf":
                attached.append(f"tc {kind} BPF on {l['ifname']}")
out = {"attached": attached, "owned_prog": [], "owned_link": []}
for what in ("prog", "link"):
    out[what] = [o["id"] for o in j("bpftool", "-j", what, "show")]
for pid in pids:
    try:
        fds = os.listdir(f"/proc/{pid}/fdinfo")
    except OSError:
        continue
    for fd in fds:
        try:
            info = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        for line in info.splitlines():
            key, _, val = line.partition(":")
            if key in ("prog_id", "link_id"):
                out["owned_" + key[:-3]].append(int(val))
out["owned_prog"], out["owned_link"] = sorted(set(out["owned_prog"])), sorted(set(out["owned_link"]))
print(json.dumps(out))
"""


def kernel_view(r: Remote, d: str, pids: list[int]) -> dict[str, Any]:
    res = r.run(f"{_q(r.python(d))} -c {_q(_KERNEL)} {_q(json.dumps(pids))}", sudo=True)
    if res.rc != 0:
        raise HostError(f"cannot read the kernel's BPF state: {res.err.strip()[-200:]}")
    return json.loads(res.out)


def stop(r: Remote, d: str) -> dict[str, Any]:
    """Stop the supervisor (it stops its services); then check that the processes are gone,
    that the BPF programs and links they held are gone, and that no XDP or tc BPF is left on
    the host's interfaces. Returns what was stopped and ``left`` (empty when clean)."""
    pid, services = services_status(r, d)
    pids = [s["pid"] for s in services.values() if s.get("pid")]
    have_python = bool(r.size(r.python(d)))
    before = kernel_view(r, d, pids) if have_python and pids else {}
    if unit_status(r, d) is not None:    # systemd stops the supervisor, then its cgroup
        r.run(f"systemctl stop {unit_name(d)}", sudo=True, check=True, timeout=STOP_WAIT_S + 15)
    elif pid is not None:
        r.run(f"kill -TERM {pid}", sudo=True, check=True)
        wait = (f"for i in $(seq {STOP_WAIT_S * 5}); do kill -0 {pid} 2>/dev/null || exit 0; "
                "sleep 0.2; done; exit 1")
        if r.run(wait, sudo=True).rc != 0:
            raise HostError(f"supervisor {pid} did not stop within {STOP_WAIT_S}s")
    left = [f"process {p} still running" for p in ([pid] if pid else []) + pids
            if r.run(f"kill -0 {p}", sudo=True).rc == 0]
    if have_python:
        after = kernel_view(r, d, pids)
        left += after["attached"]
        for what in ("prog", "link"):
            still = set(before.get(f"owned_{what}", ())) & set(after[what])
            left += [f"BPF {what} {i} (was held by LatScope) still loaded" for i in sorted(still)]
    return {"stopped": pid is not None, "pids": pids,
            "bpf_released": {w: len(before.get(f"owned_{w}", ())) for w in ("prog", "link")},
            "left": left}


def log_tail(r: Remote, d: str, service: str, lines: int) -> str:
    res = r.run(f"tail -n {int(lines)} {_q(d)}/run/{_q(service)}.log")
    if res.rc != 0:
        raise HostError(f"no log for {service} in {d}/run ({res.err.strip()})")
    return res.out
