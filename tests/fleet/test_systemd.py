"""`latscope fleet` on a server whose PID 1 is systemd: a real systemd booted by
systemd-nspawn in the server's namespace (lab/systemd_box.py), its sshd a unit there. `up`
runs the server's supervisor as a transient unit restarted on failure; a supervisor
SIGKILLed is started again by systemd with its services and leaves no orphan; `down` stops
the unit and nothing of LatScope is left. The lab's files live outside /tmp (bound into the
booted system at the same path; its /tmp is its own)."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from needs import missing

from latscope.lab.fleet_lab import FleetLab, local_influx
from latscope.lab.sshd_fleet import SSHD
from latscope.lab.systemd_box import NSPAWN

pytestmark = [pytest.mark.root, pytest.mark.stack]
RUN_ID = os.environ["LSX_RUN_ID"]


@pytest.fixture(scope="module")
def lab(fleet_wheel: Path, stack) -> Iterator[FleetLab]:
    for tool in (NSPAWN, SSHD):
        if not shutil.which(tool):
            missing(f"{tool} (make setup installs systemd-container and openssh-server)")
    base = Path.home() / ".cache" / "latscope" / f"lsxd{RUN_ID}"
    shutil.rmtree(base, ignore_errors=True)
    try:
        with FleetLab(f"lsxd{RUN_ID}", base, local_influx(),
                      subnet=f"10.217.{int(RUN_ID, 16) % 200 + 20}", names=["d1"],
                      wheel=fleet_wheel, systemd=["d1"]) as lab:
            lab.trust_host_keys()
            lab.write_conf()
            yield lab
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _status(lab: FleetLab) -> dict:
    p = lab.run("status", "--json")
    assert p.returncode == 0, p.stdout + p.stderr
    return next(h for h in json.loads(p.stdout)["hosts"] if h["host"] == "d1")


def test_up_runs_the_supervisor_as_a_unit_restarted_on_failure(lab: FleetLab) -> None:
    p = lab.run("up", "--json", timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    st = _status(lab)
    assert st["unit"] is not None and st["unit"]["active"] == "active", st
    assert st["unit"]["restarts"] == 0
    box = lab.fleet.boxes["d1"]   # type: ignore[union-attr]
    show = box.run(["systemctl", "show", "--property=Restart", st["unit"]["unit"]]).stdout
    assert show.strip() == "Restart=on-failure"
    assert st["services"]["agent"]["running"] and len(lab.latscope_pids("d1", "agent")) == 1


def test_a_killed_supervisor_is_restarted_by_systemd_with_its_services(lab: FleetLab) -> None:
    st = _status(lab)
    box = lab.fleet.boxes["d1"]   # type: ignore[union-attr]
    old_agents = lab.latscope_pids("d1", "agent")
    box.run(["kill", "-KILL", str(st["supervisor_pid"])], check=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = _status(lab)
        if (now["unit"] or {}).get("restarts", 0) >= 1 and now["supervisor_pid"] \
                and now["supervisor_pid"] != st["supervisor_pid"] \
                and now["services"].get("agent", {}).get("running"):
            break
        time.sleep(1)
    else:
        pytest.fail(f"supervisor not restarted: {now}")
    agents = lab.latscope_pids("d1", "agent")
    assert len(agents) == 1 and agents != old_agents, (old_agents, agents)   # no orphan


def test_down_stops_the_unit_and_leaves_nothing(lab: FleetLab) -> None:
    p = lab.run("down", "--json", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    host = next(h for h in json.loads(p.stdout)["hosts"] if h["host"] == "d1")
    assert host["left"] == [], host
    assert _status(lab)["unit"] is None
    assert lab.latscope_pids("d1", "agent") == []
    box = lab.fleet.boxes["d1"]   # type: ignore[union-attr]
    units = box.run(["systemctl", "list-units", "--all", "--no-legend", "latscope-*"]).stdout
    assert units.strip() == "", units
