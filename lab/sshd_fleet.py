"""A fleet of servers on one machine: one network namespace per server, each running its own
real OpenSSH server (``/usr/sbin/sshd -D -f <its config>``, a host key of its own, listening
on the namespace's address), all on a bridge in the root namespace whose address the
management side (and a Kafka broker it runs) is reached at. Inside, each server's interface
is ``eth0``, as connect_info names it. Servers share the filesystem: give each its own
install directory (``fleet.install_dir`` with ``{hostname}``). A server may boot systemd as
its PID 1 (``systemd``: lab/systemd_box.py), its sshd a unit there.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from latscope import log
from latscope.lab.netns import teardown
from latscope.lab.systemd_box import SystemdBox
from latscope.procs import port_open

LOG = log.get("lab.sshd_fleet")
SSHD = "/usr/sbin/sshd"
SSHD_UNIT = "lsx-sshd.service"     # a systemd server's sshd


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True)


def keygen(path: Path, passphrase: str = "") -> Path:
    """An ed25519 key pair at ``path`` (and ``path.pub``)."""
    path.unlink(missing_ok=True)
    path.with_suffix(".pub").unlink(missing_ok=True)
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "lsx",
                    "-f", str(path)], check=True, capture_output=True)
    return path


@dataclass
class SshServer:
    name: str
    ns: str
    address: str
    dir: Path
    proc: subprocess.Popen | None = None

    @property
    def host_key(self) -> Path:
        return self.dir / "ssh_host_ed25519_key"

    def host_key_line(self, port: int = 22) -> str:
        """The known_hosts line of this server's key."""
        kind, b64 = self.host_key.with_suffix(".pub").read_text().split()[:2]
        who = self.address if port == 22 else f"[{self.address}]:{port}"
        return f"{who} {kind} {b64}\n"


@dataclass
class SshFleet:
    prefix: str                  # namespaces {prefix}-{name}, bridge {prefix}br
    names: list[str]
    base: Path                   # per-server sshd files, the client key
    subnet: str = "10.213.0"     # /24: .1 the bridge, .11 .. the servers
    users: list[str] = field(default_factory=lambda: ["root"])   # AllowUsers
    # sshd reads a user's keys as that user: a second AuthorizedKeysFile the users can read
    user_keys: Path | None = None
    # servers whose PID 1 is systemd (lab/systemd_box.py), their sshd a unit there; ``binds``
    # are the directories such a server sees (this machine's, at the same path)
    systemd: list[str] = field(default_factory=list)
    binds: list[Path] = field(default_factory=list)
    boxes: dict[str, SystemdBox] = field(default_factory=dict)
    servers: dict[str, SshServer] = field(default_factory=dict)

    @property
    def bridge(self) -> str:
        return f"{self.prefix}br"

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    @property
    def client_key(self) -> Path:
        return self.base / "client_key"

    def __enter__(self) -> SshFleet:
        try:
            self.build()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def build(self) -> None:
        Path("/run/sshd").mkdir(exist_ok=True)   # sshd's privilege separation directory
        self.base.mkdir(parents=True, exist_ok=True)
        keygen(self.base / "client_key")
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, name in enumerate(self.names):
            ns, outer, inner = f"{self.prefix}-{name}", f"{self.prefix}v{i}", f"{self.prefix}p{i}"
            _ip("netns", "add", ns)
            _ip("link", "add", outer, "type", "veth", "peer", "name", inner)
            _ip("link", "set", outer, "master", self.bridge, "up")
            _ip("link", "set", inner, "netns", ns)
            _ip("-n", ns, "link", "set", inner, "name", "eth0")
            addr = f"{self.subnet}.{11 + i}"
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
            _ip("-n", ns, "link", "set", "lo", "up")
            _ip("-n", ns, "route", "add", "default", "via", self.gateway)
            d = self.base / name
            d.mkdir(parents=True, exist_ok=True)
            srv = SshServer(name, ns, addr, d)
            keygen(srv.host_key)
            self.servers[name] = srv
            self.authorize(name, self.client_key)
            self.start(name)

    def authorize(self, name: str, key: Path) -> None:
        srv = self.servers[name]
        (srv.dir / "authorized_keys").write_text(key.with_suffix(".pub").read_text())

    def start(self, name: str, timeout: float = 10.0) -> None:
        srv = self.servers[name]
        box = self._box(name)
        (srv.dir / "sshd_config").write_text(
            f"ListenAddress {srv.address}\nPort 22\nHostKey {srv.host_key}\n"
            f"PidFile {srv.dir}/sshd.pid\nAuthorizedKeysFile {srv.dir}/authorized_keys"
            f"{' ' + str(self.user_keys) if self.user_keys else ''}\n"
            "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
            f"Subsystem sftp internal-sftp\nLogLevel VERBOSE\nAllowUsers {' '.join(self.users)}\n")
        sshd = [SSHD, "-D", "-e", "-f", str(srv.dir / "sshd_config")]
        if box is not None:
            box.run(["systemd-run", "--quiet", "--collect", f"--unit={SSHD_UNIT}",
                     "--property=RuntimeDirectory=sshd",
                     f"--property=StandardOutput=append:{srv.dir}/sshd.log",
                     "--property=StandardError=inherit", *sshd], check=True)
        else:
            log_file = open(srv.dir / "sshd.log", "ab")
            srv.proc = subprocess.Popen(["ip", "netns", "exec", srv.ns, *sshd], stdout=log_file,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            log_file.close()
        deadline = time.monotonic() + timeout
        while not port_open(srv.address, 22):
            if (srv.proc is not None and srv.proc.poll() is not None) \
                    or time.monotonic() > deadline:
                raise RuntimeError(f"sshd in {srv.ns} did not start: "
                                   f"{(srv.dir / 'sshd.log').read_text()[-500:]}")
            time.sleep(0.1)

    def stop(self, name: str) -> None:
        """Stop this server's sshd only (sessions it forked end with their connections;
        what they started detached lives on, as on a real server)."""
        srv = self.servers[name]
        if name in self.boxes:
            self.boxes[name].run(["systemctl", "stop", SSHD_UNIT])
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.terminate()
            srv.proc.wait(10)
        srv.proc = None

    def _box(self, name: str) -> SystemdBox | None:
        """The server's booted systemd (booted on first use), or None for a plain one."""
        if name not in self.systemd:
            return None
        if name not in self.boxes:
            box = SystemdBox(f"{self.prefix}-{name}", self.servers[name].ns, self.binds,
                             log_file=self.servers[name].dir / "systemd.log")
            self.boxes[name] = box
            box.boot()
        return self.boxes[name]

    def new_host_key(self, name: str) -> None:
        """Give this server a new host key (a reinstall, or someone in between)."""
        self.stop(name)
        keygen(self.servers[name].host_key)
        self.start(name)

    def known_hosts(self, names: list[str] | None = None) -> str:
        return "".join(self.servers[n].host_key_line() for n in names or self.names)

    def close(self) -> None:
        for name in list(self.servers):
            with contextlib.suppress(Exception):
                self.stop(name)
        for box in self.boxes.values():
            box.stop()
        # What the fleet started inside (supervisors, agents) if a test failed before
        # `fleet down`: SIGKILLed with the namespaces, which only this prefix names.
        left = teardown(self.prefix, kill=True)
        with contextlib.suppress(subprocess.CalledProcessError):
            _ip("link", "del", self.bridge)
        for i in range(len(self.names)):
            with contextlib.suppress(subprocess.CalledProcessError):
                _ip("link", "del", f"{self.prefix}v{i}")
        if left:
            LOG.warning("not removed: %s", left)

