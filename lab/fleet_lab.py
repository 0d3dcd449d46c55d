"""A management server and its fleet on one machine, for the fleet demo and the fleet tests:
servers as namespaces with their own sshd (sshd_fleet.py), a Kafka broker of its own on the
bridge address the servers reach the management side at (the local stack's listens on
127.0.0.1, which a namespace cannot reach), and a conf directory in the original format
(connect_info.yaml, management_server_info.yaml, time_sync.yaml, sampling_info.yaml) plus
latscope.yaml pointing at all of it. ``latscope fleet`` runs against it as it would on a real
management server."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import yaml

from latscope import log
from latscope.bpf.netns import ip
from latscope.lab.netns import namespace_pids, unshared, wait_listening
from latscope.lab.sshd_fleet import SshFleet
from latscope.procs import free_port, free_port_pair
from latscope.schemas.records import TOPIC_BREAKDOWNS

LOG = log.get("lab.fleet_lab")
LATSCOPE = [sys.executable, "-m", "latscope"]
NAMES = ["n1", "n2", "n3"]
PORT = 5001          # sampling_info.yaml's port (write_conf's default): iperf3's


@dataclass
class FleetLab:
    prefix: str                  # namespaces, bridge and veths are named under it
    base: Path                   # sshd files, the broker, the conf and state directories
    influx: dict[str, str]       # latscope.yaml's influxdb section (the local stack's)
    subnet: str = "10.213.0"
    names: list[str] = field(default_factory=lambda: list(NAMES))
    wheel: Path | None = None    # given to `fleet up` (None: it builds one)
    ssh_users: list[str] = field(default_factory=lambda: ["root"])   # sshd's AllowUsers
    install_root: Path | None = None   # fleet.install_dir's parent (None: base/hosts)
    user_keys: Path | None = None      # sshd's AuthorizedKeysFile for users other than root
    systemd: list[str] = field(default_factory=list)   # servers booted with systemd as PID 1
    web_port: int = field(default_factory=free_port)   # the stream worker's
    fleet: SshFleet | None = None
    kafka: Any = None

    @property
    def conf(self) -> Path:
        return self.base / "conf"

    @property
    def state(self) -> Path:
        return self.base / "state"

    @property
    def known_hosts(self) -> Path:
        return self.base / "known_hosts"

    @property
    def bootstrap(self) -> str:
        return self.kafka.bootstrap

    def host_dir(self, name: str) -> Path:
        return (self.install_root or self.base / "hosts") / name

    def latscope_pids(self, name: str, command: str | None = None) -> list[int]:
        """LatScope's processes in server ``name``'s namespace (as this machine numbers
        them): any (the supervisor included), or those running ``latscope COMMAND``."""
        out = []
        for pid in namespace_pids(self.servers()[name].ns):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue        # gone meanwhile
            if command is None:
                ours = any(b"latscope" in a for a in argv)
            else:     # [python,] .../latscope COMMAND ...
                at = next((i for i, a in enumerate(argv[:2]) if a.endswith(b"/latscope")), -1)
                ours = at >= 0 and argv[at + 1:at + 2] == [command.encode()]
            if ours:
                out.append(pid)
        return out

    def servers(self) -> dict[str, Any]:
        assert self.fleet is not None
        return self.fleet.servers

    def __enter__(self) -> Self:
        from latscope.stack.services import StackSettings

        self.base.mkdir(parents=True, exist_ok=True)
        try:
            self.fleet = SshFleet(self.prefix, self.names, self.base / "sshd", self.subnet,
                                  users=self.ssh_users, user_keys=self.user_keys,
                                  systemd=self.systemd, binds=[self.base])
            self.fleet.build()
            self.kafka = StackSettings(run_dir=self.base / "kafka", kafka_port=free_port_pair(),
                                       kafka_host=self.fleet.gateway).kafka()
            self.kafka.provision()
            self.kafka.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def trust_host_keys(self) -> None:
        """known_hosts with the lab's own servers' keys (on real servers: ssh-keyscan, checked
        out of band, or `fleet up --accept-new`)."""
        assert self.fleet is not None
        self.known_hosts.write_text(self.fleet.known_hosts())

    def write_conf(self, servers: dict[str, dict] | None = None,
                   ports: tuple[int, ...] = (PORT,), password: str | None = None,
                   containers: Sequence[Container] = ()) -> None:
        """The original files plus latscope.yaml; ``servers`` overrides fields per host;
        ``password``: connect_info's legacy field (here also the client key's passphrase);
        ``containers``: entries ``iscontainer: K`` of their servers."""
        assert self.fleet is not None
        self.conf.mkdir(parents=True, exist_ok=True)
        entries = []
        for i, name in enumerate(self.names):
            srv = self.fleet.servers[name]
            entries.append({"address": srv.address, "port": 22, "username": "root",
                            **({"password": password} if password else {}),
                            "hostname": name, "novm": i + 1, "metadata_key": i + 1,
                            "eth": ["eth0"], **(servers or {}).get(name, {})})
        for j, c in enumerate(containers):
            entries.append({"address": c.address, "hostname": c.name,
                            "iscontainer": self.names.index(c.host) + 1,
                            "metadata_key": len(self.names) + j + 1,
                            "container_address": [c.address]})
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
                "influxdb": self.influx,
                "fleet": {"install_dir": str(self.host_dir("{hostname}")),
                          "known_hosts": str(self.known_hosts),
                          "identity_file": str(self.fleet.client_key),
                          "state_dir": str(self.state), "parallel": len(self.names),
                          "worker_web_port": self.web_port},
            },
        }
        for name, doc in files.items():
            (self.conf / name).write_text(yaml.safe_dump(doc))

    def argv(self, action: str, *rest: str) -> list[str]:
        """``latscope fleet ACTION CONF ...`` (``up`` with the lab's wheel if it has one)."""
        argv = [*LATSCOPE, "fleet", action, str(self.conf), *rest]
        if action == "up" and self.wheel is not None:
            argv += ["--wheel", str(self.wheel)]
        return argv

    def run(self, action: str, *rest: str, timeout: float = 600) -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(action, *rest), capture_output=True, text=True,
                              timeout=timeout)

    def iperf(self, pairs: Sequence[tuple[str, str]], seconds: float, port: int = PORT,
              ) -> dict[str, str]:
        """iperf3 from each pair's first server to its second, all at once, at 20 Mbit/s on
        the sampled port; the pairs that failed ("a>b": iperf3's error)."""
        servers = self.servers()
        procs: list[subprocess.Popen] = []
        failed = {}
        try:
            for _, dst in pairs:
                procs.append(subprocess.Popen(
                    ["ip", "netns", "exec", servers[dst].ns, "iperf3", "-s", "-1", "-p",
                     str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            for (_, dst), srv in zip(pairs, procs, strict=True):
                wait_listening(servers[dst].ns, port, server=srv)
            clients = [subprocess.Popen(
                ["ip", "netns", "exec", servers[src].ns, "iperf3", "-c", servers[dst].address,
                 "-p", str(port), "-t", str(max(1, round(seconds))), "-b", "20M"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                for src, dst in pairs]
            procs += clients
            for c, (src, dst) in zip(clients, pairs, strict=True):
                _, err = c.communicate(timeout=seconds + 60)
                if c.returncode:
                    failed[f"{src}>{dst}"] = err.strip()[-200:]
        finally:
            for pr in procs:
                if pr.poll() is None:
                    pr.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    pr.wait(5)
        return failed

    def breakdowns(self, pairs: Sequence[tuple[str, str]], timeout: float) -> list[dict]:
        """Every breakdown on the lab broker's topic, read until each (src, dst) host pair
        has a complete one or ``timeout``."""
        from latscope.schemas import codec
        from latscope.stream.kafkaio import consume

        bds: list[dict] = []

        def enough(msgs: list) -> bool:
            bds[:] = [codec.decode(m.value(), expect="Breakdown")[1] for m in msgs]
            seen = {(b["src_host"], b["dst_host"]) for b in bds if b["complete"]}
            return all(p in seen for p in pairs)

        consume(self.bootstrap, TOPIC_BREAKDOWNS, enough, timeout=timeout)
        return bds

    def close(self) -> None:
        """`fleet down` if a conf was written, then whatever it could not stop: the
        management supervisor by its pid file, the broker, the namespaces."""
        try:
            if self.conf.exists() and self.state.exists():
                with contextlib.suppress(Exception):
                    p = self.run("down")
                    if p.returncode:
                        LOG.warning("fleet down: %s", (p.stdout + p.stderr)[-500:])
            _kill_central(self.state)
        finally:
            try:
                if self.kafka is not None:
                    self.kafka.stop()
            finally:
                if self.fleet is not None:
                    self.fleet.close()


@dataclass
class Container:
    """A container of a server the way a container runtime makes one: a process in a network
    namespace of its own that has no name (nothing under /run/netns), a veth to its server's
    namespace (the server forwards for it), and a route to it on the servers that talk to
    it. ``ns`` is its namespace file for nsenter."""

    name: str
    host: str
    address: str
    ifname: str = ""                 # its side of the veth
    proc: subprocess.Popen | None = None

    @property
    def ns(self) -> str:
        assert self.proc is not None
        return f"/proc/{self.proc.pid}/ns/net"

    def start(self, lab: FleetLab, veth: str, peers: Sequence[str]) -> None:
        """``veth``: the pair's name stem (``{veth}h`` on the server, ``{veth}c`` inside)."""
        servers = lab.servers()
        host_ns, host_addr = servers[self.host].ns, servers[self.host].address
        gw = str(ipaddress.ip_address(self.address) - 1)
        self.ifname = f"{veth}c"
        self.proc = unshared()
        for cmd in (ip(host_ns, "link", "add", f"{veth}h", "type", "veth", "peer", "name",
                       self.ifname),
                    ip(host_ns, "link", "set", self.ifname, "netns", str(self.proc.pid)),
                    ip(host_ns, "addr", "add", f"{gw}/30", "dev", f"{veth}h"),
                    ip(host_ns, "link", "set", f"{veth}h", "up"),
                    ["ip", "netns", "exec", host_ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
                    ip(self.ns, "addr", "add", f"{self.address}/30", "dev", self.ifname),
                    ip(self.ns, "link", "set", self.ifname, "up"),
                    ip(self.ns, "link", "set", "lo", "up"),
                    ip(self.ns, "route", "add", "default", "via", gw),
                    *[ip(servers[p].ns, "route", "add", f"{self.address}/32", "via", host_addr)
                      for p in peers]):
            subprocess.run(cmd, check=True, capture_output=True)

    def stop(self) -> None:
        """Its namespace (and the veth) goes with its process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def local_influx() -> dict[str, str]:
    """latscope.yaml's influxdb section for the local stack's InfluxDB (its token by file)."""
    from latscope.stack.services import StackSettings

    st = StackSettings.from_env()
    influx = st.influxdb()
    return {"url": influx.url, "org": st.org, "bucket": st.bucket,
            "token_file": str(influx.token_file)}


def _kill_central(state: Path) -> None:
    """The management supervisor, by its pid file, if it is still the one `up` started."""
    pid_file = state / "management" / "run" / "supervisor.pid"
    if not pid_file.exists():
        return
    pid = int(pid_file.read_text())
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return
    if b"latscope.fleet.supervisor" in cmd:
        os.kill(pid, 15)
