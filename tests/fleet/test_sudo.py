"""`latscope fleet` as a user who is not root: the install is the user's (a venv in a
directory the user owns), the services run as root through `sudo -n`, and a user without
passwordless sudo gets a clear refusal for that server, never a prompt that hangs. One
server (a namespace with its own sshd) and a real sudo; the user and its sudoers rule are
made for the run and removed after it."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from needs import missing

from latscope.lab.fleet_lab import FleetLab, local_influx
from latscope.lab.sshd_fleet import SSHD

pytestmark = [pytest.mark.root, pytest.mark.stack]
RUN_ID = os.environ["LSX_RUN_ID"]
USER = f"lsxu{RUN_ID}"
SUDOERS = Path(f"/etc/sudoers.d/{USER}")


@pytest.fixture(scope="module")
def user() -> Iterator[str]:
    for tool in ("sudo", "useradd", "userdel", SSHD):
        if not shutil.which(tool):
            missing(f"{tool} (make setup installs sudo and openssh-server)")
    subprocess.run(["userdel", USER], capture_output=True)     # a crashed run's, if any
    subprocess.run(["useradd", "--no-create-home", "--home-dir", "/nonexistent", "--shell",
                    "/bin/sh", USER], check=True)
    # "*": no password, yet not locked ("!"), which sshd refuses even for key logins
    subprocess.run(["usermod", "-p", "*", USER], check=True)
    try:
        yield USER
    finally:
        SUDOERS.unlink(missing_ok=True)
        subprocess.run(["userdel", USER], capture_output=True)


@pytest.fixture(scope="module")
def lab(user: str, tmp_path_factory: pytest.TempPathFactory, fleet_wheel: Path, stack,
        ) -> Iterator[FleetLab]:
    # The user's own install root: the test's temporary directories are root's alone.
    root = Path(tempfile.mkdtemp(prefix=f"{USER}-"))
    shutil.chown(root, user)
    keys = root / "authorized_keys"          # sshd reads it as the user
    try:
        with FleetLab(f"lsxs{RUN_ID}", tmp_path_factory.mktemp("fleet-sudo"), local_influx(),
                      subnet=f"10.216.{int(RUN_ID, 16) % 200 + 20}", names=["s1"],
                      wheel=fleet_wheel, ssh_users=[user], install_root=root,
                      user_keys=keys) as lab:
            assert lab.fleet is not None
            keys.write_text(lab.fleet.client_key.with_suffix(".pub").read_text())
            lab.trust_host_keys()
            lab.write_conf(servers={"s1": {"username": user}})
            yield lab
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _uid(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Uid:")))


def _host(p: subprocess.CompletedProcess) -> dict:
    return next(h for h in json.loads(p.stdout)["hosts"] if h["host"] == "s1")


def test_without_passwordless_sudo_the_server_is_refused_clearly(lab: FleetLab) -> None:
    SUDOERS.unlink(missing_ok=True)
    p = lab.run("up", "--json", timeout=300)
    assert p.returncode == 1, p.stdout + p.stderr
    h = _host(p)
    assert not h["ok"] and "sudo" in h["reason"] and "password" in h["reason"], h
    assert lab.latscope_pids("s1") == [], "a service started anyway"


def test_with_sudo_services_run_as_root_and_the_install_is_the_users(lab: FleetLab,
                                                                      user: str) -> None:
    SUDOERS.write_text(f"{user} ALL=(root) NOPASSWD: ALL\n")
    SUDOERS.chmod(0o440)
    subprocess.run(["visudo", "-cf", str(SUDOERS)], check=True, capture_output=True)
    p = lab.run("up", "--json", timeout=600)
    assert p.returncode == 0, p.stdout + p.stderr
    assert sorted(_host(p)["started"]) == ["agent", "responder"]
    st = _host(lab.run("status", "--json"))
    agent = st["services"]["agent"]
    assert agent["running"] and _uid(agent["pid"]) == 0 and _uid(st["supervisor_pid"]) == 0
    uid = pwd.getpwnam(user).pw_uid
    venv = lab.host_dir("s1") / "venv" / "bin" / "python"
    assert os.lstat(venv).st_uid == uid and (lab.host_dir("s1") / "etc").stat().st_uid == uid
    p = lab.run("down", "--json", timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    assert _host(p)["left"] == [], _host(p)
    assert lab.latscope_pids("s1") == []
