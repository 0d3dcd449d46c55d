"""compose/docker-compose.yml: official images, the LatScope services, accepted by a compose client."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from urllib.parse import urlparse

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


def _resolved(client: list[str], tmp_path: Path) -> dict:
    copy = tmp_path / "compose"
    shutil.copytree(COMPOSE.parent, copy)
    shutil.copytree(REPO_ROOT / "conf", tmp_path / "conf")
    (copy / "secrets").mkdir(exist_ok=True)
    for name in ("influxdb_password", "influxdb_token"):
        (copy / "secrets" / name).write_text("x\n")
    proc = subprocess.run([*client, "-f", str(copy / "docker-compose.yml"), "config"],
                          capture_output=True, text=True, cwd=copy)
    assert proc.returncode == 0, proc.stderr
    return yaml.safe_load(proc.stdout)


def _mounted_config(service: dict, tmp_path: Path) -> Path:
    """The conf directory as the service sees it: the mounts, applied in order."""
    seen = tmp_path / f"seen-{uuid.uuid4().hex[:6]}"
    for v in service["volumes"]:
        src, dst = (v["source"], v["target"]) if isinstance(v, dict) else v.split(":")[:2]
        if not dst.startswith("/etc/latscope"):
            continue
        rel = dst.removeprefix("/etc/latscope").lstrip("/")
        if Path(src).is_dir():
            shutil.copytree(src, seen / rel, dirs_exist_ok=True)
        else:
            shutil.copy(src, seen / rel)
    return seen


def test_each_service_gets_values_that_reach_the_others(tmp_path: Path) -> None:
    """What each service is given, against what the others listen on: the worker binds all
    addresses and finds Kafka and InfluxDB by service name; the host-network agent reaches
    the broker's published, advertised HOST listener."""
    from latscope.config import load

    client = _client()
    if client is None:
        missing("no compose client (make setup installs docker-compose)")
    doc = _resolved(client, tmp_path)
    services = doc["services"]
    kafka_env = services["kafka"]["environment"]
    advertised = kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")

    stream = services["stream"]
    cmd = stream["command"]
    assert cmd[cmd.index("--web-host") + 1] == "0.0.0.0"
    cfg = load(_mounted_config(stream, tmp_path)).config
    assert f"PLAINTEXT://{cfg.kafka.bootstrap}" in advertised, (cfg.kafka.bootstrap, advertised)
    assert cfg.kafka.bootstrap.split(":")[0] in services
    url = urlparse(cfg.influxdb.url)
    assert url.hostname in services and services[url.hostname]["image"].startswith("influxdb")
    assert url.port == 8086
    assert cfg.influxdb.token_file == "/run/secrets/influxdb_token"
    assert any((s if isinstance(s, str) else s["source"]) == "influxdb_token"
               for s in stream["secrets"])

    agent = services["agent"]
    assert agent["network_mode"] == "host"
    boot = agent["command"][agent["command"].index("--bootstrap") + 1]
    assert f"HOST://{boot}" in advertised, (boot, advertised)
    port = boot.rsplit(":", 1)[1]
    published = [str(p) if not isinstance(p, dict) else f"{p.get('host_ip', '')}:"
                 f"{p['published']}:{p['target']}" for p in services["kafka"]["ports"]]
    assert any(p.removesuffix("/tcp").split(":")[-2:] == [port, port] for p in published), published
    load(_mounted_config(agent, tmp_path))    # the agent's config loads too
