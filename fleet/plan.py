"""What each machine of the fleet runs, derived from the conf directory alone: a server's
config file and services (agent, sync responder), the management server's services (sync
manager, stream worker). Each service carries a digest of everything it reads, so ``up``
restarts exactly the services whose inputs changed.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml

from latscope.config import Config, Server
from latscope.errors import UserError
from latscope.sync.responder import DEFAULT_PORT

SUPERVISOR_MODULE = "latscope.fleet.supervisor"


def digest(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:16]


def deployed(config: Config) -> list[Server]:
    """Servers that run an agent and a responder: hosts and VMs. A container entry is
    covered by its host (its addresses name it in the worker's view)."""
    return [s for s in config.servers if s.kind != "container"]


def containers(config: Config, server: Server) -> list[Server]:
    """The container entries whose host is ``server``: its agent covers their namespaces."""
    return [s for s in config.servers
            if s.kind == "container" and s.iscontainer == server.metadata_key]


def manager_address(config: Config) -> str:
    if config.ping is not None:
        return config.ping.management_server
    if config.management is not None:
        return config.management.address
    raise UserError("management_server_info.yaml (or ping_info.yaml) is missing: the "
                    "responders need the manager's address")


def sync_port(config: Config, server: Server) -> int:
    if config.ping is not None:
        for t in config.ping.servers:
            if t.address in (server.address, *server.other_address):
                return t.port
    return DEFAULT_PORT


@dataclass(frozen=True)
class HostPlan:
    server: Server
    dir: str
    config_yaml: str                       # etc/latscope.yaml
    secrets: dict[str, bytes]              # etc/NAME -> content, mode 0600
    services: dict[str, dict]              # services.json

    @property
    def services_json(self) -> str:
        return json.dumps({"services": self.services}, indent=1, sort_keys=True)


def host_plan(config: Config, server: Server, sync_key: bytes, bundle_digest: str) -> HostPlan:
    if not server.eth:
        raise UserError(f"connect_info.yaml: {server.hostname}: eth: expected the interface "
                        "the sync responder listens on, got none")
    d = config.fleet.host_dir(server.hostname)
    secrets = {"sync.key": sync_key}
    kafka = config.kafka.model_dump(exclude_defaults=True)
    if config.kafka.password_file:
        secrets["kafka.password"] = Path(config.kafka.password_file).expanduser().read_bytes()
        kafka["password_file"] = f"{d}/etc/kafka.password"
    text = yaml.safe_dump({
        "sampling": config.sampling.model_dump(mode="json"),
        "kafka": kafka,
        "agent": config.agent.model_dump(exclude_none=True),
    }, sort_keys=True)
    exe = f"{d}/venv/bin/latscope"
    env = {"LATSCOPE_CACHE": f"{d}/cache", "HOME": d}
    # each container's addresses, named by its hostname: its records go under that name
    cover = [f"{c.hostname}={a}" for c in containers(config, server)
             for a in (*c.container_address, c.address)]
    services = {
        "agent": {"argv": [exe, "agent", "--config", f"{d}/etc/latscope.yaml",
                           "--host", server.hostname, "--status-file", f"{d}/run/agent.status.json",
                           *[x for a in dict.fromkeys(cover) for x in ("--cover-address", a)],
                           *(["--restart-on-coverage-change"] if cover else [])],
                  "env": env, "ready_file": f"{d}/run/agent.status.json"},
        "responder": {"argv": [exe, "sync", "responder", "--ifname", server.eth[0],
                               "--allow", manager_address(config),
                               "--port", str(sync_port(config, server)),
                               "--key-file", f"{d}/etc/sync.key", "--json", "--progress", "30"],
                      "env": env},
    }
    services["agent"]["digest"] = digest(bundle_digest, text, *services["agent"]["argv"])
    services["responder"]["digest"] = digest(bundle_digest, sync_key,
                                             *services["responder"]["argv"])
    return HostPlan(server, d, text, secrets, services)


def central_services(config: Config, conf_dir: Path, state: Path) -> dict[str, dict]:
    """The sync manager and the stream worker, run on this (management) machine."""
    exe = [sys.executable, "-m", "latscope"]
    targets = [f"{s.hostname}={s.address}" for s in deployed(config)]
    conf_text = "".join(p.read_text() for p in sorted(Path(conf_dir).glob("*.yaml"))) \
        if Path(conf_dir).is_dir() else Path(conf_dir).read_text()
    manager = [*exe, "sync", "manager", "--config", str(conf_dir), "--key-file",
               str(state / "sync.key"), "--progress", "30",
               "--interval", str(config.time_sync.interval_s),
               *[a for t in targets for a in ("--host", t)]]
    worker = [*exe, "stream", "worker", "--config", str(conf_dir),
              "--data-dir", str(state / "stream"),
              "--web-port", str(config.fleet.worker_web_port)]
    return {
        "sync-manager": {"argv": manager, "env": {}, "digest": digest(conf_text, *manager)},
        "stream-worker": {"argv": worker, "env": {}, "digest": digest(conf_text, *worker)},
    }
