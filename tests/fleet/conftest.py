"""The fleet tests' machine room: servers as network namespaces each running a real sshd
(lab/sshd_fleet.py), a private Kafka broker on the bridge address they reach the management
side at (the shared one at 127.0.0.1:9092 is never touched), a LatScope wheel built once,
and a conf directory in the original format pointing at all of it."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_room import NAMES, PREFIX, RUN_ID, Room
from needs import missing

from latscope.fleet.bundle import build_latscope_wheel
from latscope.lab.sshd_fleet import SSHD, SshFleet, keygen
from latscope.procs import free_port, free_port_pair
from latscope.stack.services import StackSettings

pytestmark = [pytest.mark.root, pytest.mark.stack]


@pytest.fixture(scope="session")
def fleet_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_latscope_wheel(tmp_path_factory.mktemp("fleet-wheel"))


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory, fleet_wheel: Path, stack) -> Iterator[Room]:
    for tool in (SSHD, "ssh-keygen", "iperf3", "bpftool"):
        if not shutil.which(tool):
            missing(f"{tool} (make setup installs openssh-server, openssh-client, iperf3, bpftool)")
    tmp = tmp_path_factory.mktemp("fleet")
    subnet = f"10.213.{int(RUN_ID, 16) % 200 + 20}"
    password = "lsxh-" + secrets.token_hex(12)
    with SshFleet(PREFIX, NAMES, tmp / "sshd", subnet) as fleet:
        keygen(fleet.client_key, passphrase=password)   # the legacy password decrypts it
        for name in NAMES:
            fleet.authorize(name, fleet.client_key)
        kafka = StackSettings(run_dir=tmp / "kafka", kafka_port=free_port_pair(),
                              kafka_host=fleet.gateway).kafka()
        kafka.provision()
        kafka.start()
        r = Room(fleet, kafka.bootstrap, fleet_wheel, tmp, password, [], free_port())
        try:
            r.write_conf()
            yield r
        finally:
            try:
                if r.conf.exists():
                    r.run("down")
            finally:
                _kill_central(r.state)
                kafka.stop()


def _kill_central(state: Path) -> None:
    """If `fleet down` could not: the management supervisor, by its pid file."""
    pid_file = state / "management" / "run" / "supervisor.pid"
    if pid_file.exists():
        pid = int(pid_file.read_text())
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes() if Path(f"/proc/{pid}").exists() else b""
        if b"latscope.fleet.supervisor" in cmd:
            os.kill(pid, 15)
