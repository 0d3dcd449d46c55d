"""The fleet tests' room: three sshd "servers" in namespaces, a Kafka on the bridge, the
management server's configuration files, and running ``latscope fleet``. Here, not in
conftest.py, so that test modules import it by a name of its own (every conftest.py is
imported as ``conftest``: which one a test gets depends on what pytest loaded last)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from latscope.lab.sshd_fleet import SshFleet

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
