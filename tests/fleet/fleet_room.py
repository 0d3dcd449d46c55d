"""The fleet tests' room: the lab's fleet (lab/fleet_lab.py: three sshd "servers" in
namespaces, a Kafka on the bridge, the conf directory) with connect_info's legacy password
in it, and every fleet command's output kept for the secret search. Here, not in
conftest.py, so that test modules import it by a name of its own (every conftest.py is
imported as ``conftest``: which one a test gets depends on what pytest loaded last)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field

from latscope.lab.fleet_lab import LATSCOPE, NAMES, Container, FleetLab

RUN_ID = os.environ["LSX_RUN_ID"]
PREFIX = f"lsxh{RUN_ID}"
__all__ = ["LATSCOPE", "NAMES", "PREFIX", "RUN_ID", "Room"]


@dataclass
class Room(FleetLab):
    password: str = ""     # connect_info's, also the client key's passphrase
    outputs: list[str] = field(default_factory=list)   # every fleet command's stdout, stderr

    def write_conf(self, servers: dict[str, dict] | None = None, ports: tuple[int, ...] = (5001,),
                   password: str | None = None, containers: Sequence[Container] = ()) -> None:
        super().write_conf(servers, ports, password=password or self.password,
                           containers=containers)

    def run(self, action: str, *rest: str, timeout: float = 600) -> subprocess.CompletedProcess:
        """``latscope fleet ACTION CONF ...`` (+ --wheel for up), as the management server."""
        p = super().run(action, *rest, timeout=timeout)
        self.outputs += [p.stdout, p.stderr]
        return p
