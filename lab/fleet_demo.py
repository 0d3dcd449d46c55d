"""``latscope demo --fleet``: a fleet rollout on one machine. Three servers as namespaces
with their own sshd (fleet_lab.py); ``latscope fleet up`` installs and starts LatScope on
each over SSH exactly as on real servers, iperf3 runs n1 → n2 and n2 → n3, the breakdowns
are read back from Kafka, then ``fleet status`` and ``fleet down``. Everything is removed on
exit, Ctrl-C included; the run's logs and conf directory stay for a look."""

from __future__ import annotations

import json
import shutil
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope import log
from latscope.lab.demo import ensure_stack
from latscope.lab.fleet_lab import FleetLab, local_influx
from latscope.paths import cache_dir

_log = log.get("lab.fleet_demo")
PAIRS = (("n1", "n2"), ("n2", "n3"))
BREAKDOWN_WAIT_S = 90     # from the end of the traffic until both paths have complete samples


@dataclass
class FleetDemoOptions:
    duration_s: float = 10.0
    prefix: str = "lsdf"
    wheel: Path | None = None
    start_stack: bool = True
    base: Path = field(default_factory=lambda: cache_dir() / "fleet-demo")
    progress: Callable[[str], None] = lambda msg: _log.info("%s", msg)


def run_fleet_demo(opts: FleetDemoOptions) -> dict[str, Any]:
    from latscope.stack.services import StackSettings

    say = opts.progress
    ensure_stack(StackSettings.from_env(), opts.start_stack, say)
    run_dir = opts.base / time.strftime("%Y%m%d-%H%M%S")
    summary: dict[str, Any] = {"run_dir": str(run_dir), "missing": {}}
    say(f"building {len(PAIRS) + 1} servers ({opts.prefix}-n1 …), each with its own sshd, and "
        "a Kafka broker on their bridge…")
    with FleetLab(opts.prefix, run_dir, local_influx(), wheel=opts.wheel) as lab:
        lab.trust_host_keys()
        lab.write_conf()
        say(f"conf directory (original format + latscope.yaml): {lab.conf}")
        summary["up"] = _fleet(lab, "up", say)
        if not summary["up"]["ok"]:
            summary["missing"]["up"] = "; ".join(
                f"{h['host']}: {h['reason']}" for h in summary["up"]["hosts"] if not h["ok"])
        else:
            say(f"iperf3 {' and '.join(f'{a} → {b}' for a, b in PAIRS)} for "
                f"{opts.duration_s:.0f} s…")
            for pair, err in lab.iperf(PAIRS, opts.duration_s).items():
                say(f"iperf3 {pair} failed: {err}")
            summary["paths"] = _paths(lab, say)
            for a, b in PAIRS:
                if not summary["paths"].get(f"{a}>{b}", {}).get("complete"):
                    summary["missing"][f"{a}>{b}"] = "no complete breakdown"
            summary["status"] = _fleet(lab, "status", say)
        summary["down"] = _fleet(lab, "down", say)
        if not summary["down"]["ok"]:
            summary["missing"]["down"] = "; ".join(
                f"{h['host']}: {h['reason']}" for h in summary["down"]["hosts"] if not h["ok"])
    # The servers' virtualenvs are the bulk of the run directory; their logs stay.
    for venv in (run_dir / "hosts").glob("*/venv"):
        shutil.rmtree(venv, ignore_errors=True)
    if not summary["missing"]:
        del summary["missing"]
    return summary


def _fleet(lab: FleetLab, action: str, say: Callable[[str], None]) -> dict[str, Any]:
    """``latscope fleet ACTION CONF --json``, its progress on our stderr."""
    argv = lab.argv(action, "--json")
    say("$ latscope fleet " + " ".join(argv[4:]))
    p = subprocess.run(argv, stdout=subprocess.PIPE, text=True, timeout=900)
    try:
        return json.loads(p.stdout)
    except ValueError:
        return {"ok": False, "hosts": [{"host": "management", "ok": False,
                                        "reason": f"exit {p.returncode}: {p.stdout[-300:]}"}]}


def _paths(lab: FleetLab, say: Callable[[str], None]) -> dict[str, dict]:
    """Per host path, from the breakdown topic: samples, end-to-end and the segments."""
    say("reading the breakdowns back from Kafka…")
    bds = lab.breakdowns(PAIRS, BREAKDOWN_WAIT_S)
    out: dict[str, dict] = {}
    for b in bds:
        path = out.setdefault(f"{b['src_host']}>{b['dst_host']}",
                              {"complete": 0, "incomplete": 0, "e2e": [], "segs": {}})
        if not b["complete"]:
            path["incomplete"] += 1
            continue
        path["complete"] += 1
        path["e2e"].append(b["end_to_end_ns"])
        for s in b["segments"]:
            path["segs"].setdefault((s["from"], s["to"], s["layer"]), []).append(s["duration_ns"])
    for path in out.values():
        e2e, segs = path.pop("e2e"), path.pop("segs")
        path["end_to_end_median_us"] = round(statistics.median(e2e) / 1e3, 1) if e2e else None
        path["segments"] = [{"from": f, "to": t, "layer": layer,
                             "median_us": round(statistics.median(d) / 1e3, 1)}
                            for (f, t, layer), d in segs.items()]
    return out


def format_fleet_table(summary: dict[str, Any]) -> str:
    lines = []
    for name, p in summary.get("paths", {}).items():
        lines.append(f"{name}: {p['complete']} complete, {p['incomplete']} incomplete, "
                     f"end to end median {p['end_to_end_median_us']} µs")
        for s in sorted(p["segments"], key=lambda s: -s["median_us"])[:6]:
            lines.append(f"  {s['from']:>24} → {s['to']:<24} {s['layer']:8} "
                         f"{s['median_us']:>9.1f} µs")
    for what in ("up", "status", "down"):
        for h in summary.get(what, {}).get("hosts", []):
            if not h["ok"]:
                lines.append(f"fleet {what}: {h['host']} FAILED: {h['reason']}")
    for k, v in summary.get("missing", {}).items():
        lines.append(f"missing {k}: {v}")
    lines.append(f"logs and conf: {summary['run_dir']}")
    return "\n".join(lines)
