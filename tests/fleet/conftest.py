"""The fleet tests' machine room: the lab's fleet (servers as network namespaces each running
a real sshd, a private Kafka broker on the bridge address they reach the management side at:
the shared one at 127.0.0.1:9092 is never touched), a LatScope wheel built once, and a conf
directory in the original format pointing at all of it."""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from fleet_room import NAMES, PREFIX, RUN_ID, Room
from needs import missing

from latscope.lab.fleet_lab import local_influx
from latscope.lab.sshd_fleet import SSHD, keygen

pytestmark = [pytest.mark.root, pytest.mark.stack]


@pytest.fixture(scope="module")
def room(tmp_path_factory: pytest.TempPathFactory, fleet_wheel: Path, stack) -> Iterator[Room]:
    for tool in (SSHD, "ssh-keygen", "iperf3", "bpftool"):
        if not shutil.which(tool):
            missing(f"{tool} (make setup installs openssh-server, openssh-client, iperf3, bpftool)")
    password = "lsxh-" + secrets.token_hex(12)
    with Room(PREFIX, tmp_path_factory.mktemp("fleet"), local_influx(),
              subnet=f"10.213.{int(RUN_ID, 16) % 200 + 20}", names=list(NAMES),
              wheel=fleet_wheel, password=password) as r:
        assert r.fleet is not None
        keygen(r.fleet.client_key, passphrase=password)   # the legacy password decrypts it
        for name in NAMES:
            r.fleet.authorize(name, r.fleet.client_key)
        r.write_conf()
        yield r
