"""compose/docker-compose.yml: official images, the LatScope services, accepted by a compose client."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml
from needs import missing

from latscope.paths import REPO_ROOT

COMPOSE = REPO_ROOT / "compose" / "docker-compose.yml"


def test_services_and_images() -> None:
    doc = yaml.safe_load(COMPOSE.read_text())
    services = doc["services"]
    assert services["kafka"]["image"].startswith("apache/kafka:4.")
    assert services["influxdb"]["image"].startswith("influxdb:2.7")
    assert services["agent"]["privileged"] and services["agent"]["network_mode"] == "host"
    assert services["stream"]["command"][:3] == ["latscope", "stream", "worker"]


def _client() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"],
                                                 capture_output=True).returncode == 0:
        return ["docker", "compose"]
    return None


def test_compose_client_accepts_it(tmp_path: Path) -> None:
    client = _client()
    if client is None:
        missing("no compose client (make setup installs docker-compose)")
    copy = tmp_path / "compose"
    shutil.copytree(COMPOSE.parent, copy)
    (copy / "secrets").mkdir(exist_ok=True)
    for name in ("influxdb_password", "influxdb_token"):
        (copy / "secrets" / name).write_text("x\n")
    proc = subprocess.run([*client, "-f", str(copy / "docker-compose.yml"), "config", "-q"],
                          capture_output=True, text=True, cwd=copy)
    assert proc.returncode == 0, proc.stderr
