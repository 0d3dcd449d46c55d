"""The fleet tests' machine room: servers as network namespaces each running a real sshd
(lab/sshd_fleet.py), a private Kafka broker on the bridge address they reach the management
side at (the shared one at 127.0.0.1:9092 is never touched), a LatScope wheel built once,
and a conf directory in the original format pointing at all of it."""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml
from needs import missing

from latscope.fleet.bundle import build_latscope_wheel
from latscope.lab.sshd_fleet import SSHD, SshFleet, keygen
from latscope.procs import free_port, free_port_pair
from latscope.stack.services import StackSettings

pytestmark = [pytest.mark.root, pytest.mark.stack]
RUN_ID = os.environ["LSX_RUN_ID"]
PREFIX = f"lsxh{RUN_ID}"
NAMES = ["n1", "n2", "n3"]
LATSCOPE = [sys.executable, "-m", "latscope"]


@dataclass
class Room:
    fleet: SshFleet
    bootstrap: str
    wheel: Path
    tmp: Path
    password: str          # connect_info's, also the client key's passphrase
    outputs: list[str]     # every fleet command's stdout and stderr, for the secret search
    web_port: int          # the stream worker's

    @property
    def conf(self) -> Path:
        return self.tmp / "conf"

    @property
    def state(self) -> Path:
        return self.tmp / "state"

    def host_dir(self, name: str) -> Path:
        return self.tmp / "hosts" / name

    @property
    def known_hosts(self) -> Path:
        return self.tmp / "known_hosts"

    def write_conf(self, servers: dict[str, dict] | None = None, ports: tuple[int, ...] = (5001,),
                   ) -> None:
        """The original files plus latscope.yaml; ``servers`` overrides fields per host."""
        self.conf.mkdir(exist_ok=True)
        entries = []
        for i, name in enumerate(NAMES):
            srv = self.fleet.servers[name]
            entries.append({"address": srv.address, "port": 22, "username": "root",
                            "password": self.password, "hostname": name, "novm": i + 1,
                            "metadata_key": i + 1, "eth": ["eth0"],
                            **(servers or {}).get(name, {})})
        files = {
            "connect_info.yaml": {"servers": entries},
            "management_server_info.yaml": {"address": self.fleet.gateway, "port": 22,
                                            "username": "root", "hostname": "manager",
                                            "eth": [self.fleet.bridge]},
            "time_sync.yaml": {"time_interval": 1},
            "sampling_info.yaml": {"size": 72400, "interval": 1, "ports": list(ports),
                                   "filter_retrans": 1},
            "latscope.yaml": {
                "kafka": {"bootstrap": self.bootstrap},
                "influxdb": {"url": "http://127.0.0.1:8086", "org": "latscope",
                             "bucket": "latscope",
                             "token_file": str(Path.home() / ".cache/latscope/run/influxdb.token")},
                "fleet": {"install_dir": str(self.tmp / "hosts" / "{hostname}"),
                          "known_hosts": str(self.known_hosts),
                          "identity_file": str(self.fleet.client_key),
                          "state_dir": str(self.state), "parallel": 3,
                          "worker_web_port": self.web_port},
            },
        }
        for name, doc in files.items():
            (self.conf / name).write_text(yaml.safe_dump(doc))

    def run(self, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """``latscope fleet ARGS CONF`` (+ --wheel for up), as the management server."""
        action, *rest = args
        argv = [*LATSCOPE, "fleet", action, str(self.conf), *rest]
        if action == "up":
            argv += ["--wheel", str(self.wheel)]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
        self.outputs += [p.stdout, p.stderr]
        return p


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
