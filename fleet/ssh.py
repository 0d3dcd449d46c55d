"""SSH to one server with paramiko: key authentication, host keys checked against a
known_hosts file (an unknown key is refused with its fingerprint unless ``accept_new``; a
changed key is always refused), commands without secrets on their command line.

connect_info's legacy ``password`` is handed to paramiko only (password authentication,
or the passphrase of an encrypted key); it is never logged, printed or sent in a command.
"""

from __future__ import annotations

import base64
import hashlib
import shlex
import threading
from dataclasses import dataclass
from pathlib import Path

import paramiko

from latscope import log
from latscope.config import Fleet, Server

_log = log.get("fleet.ssh")
_known_hosts_lock = threading.Lock()   # --accept-new appends from several workers


class HostError(RuntimeError):
    """One server could not be handled; the message is its reason, safe to print."""


def fingerprint(key: paramiko.PKey) -> str:
    digest = hashlib.sha256(key.asbytes()).digest()
    return "SHA256:" + base64.b64encode(digest).decode().rstrip("=")


def known_hosts_name(address: str, port: int) -> str:
    return address if port == 22 else f"[{address}]:{port}"


class _Policy(paramiko.MissingHostKeyPolicy):
    def __init__(self, known_hosts: Path, accept_new: bool) -> None:
        self.known_hosts, self.accept_new = known_hosts, accept_new

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str,
                         key: paramiko.PKey) -> None:
        fp = fingerprint(key)
        if not self.accept_new:
            host, _, port = hostname.removeprefix("[").partition("]:")
            raise HostError(
                f"unknown host key {key.get_name()} {fp} (not in {self.known_hosts}); if that "
                f"is the server's key, trust it with: ssh-keyscan -p {port or 22} -t "
                f"{key.get_name()} {host} >> {self.known_hosts}   (or run again with "
                "--accept-new)")
        with _known_hosts_lock:
            self.known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with open(self.known_hosts, "a") as f:
                f.write(f"{hostname} {key.get_name()} {key.get_base64()}\n")
        _log.warning("%s: new host key %s %s accepted into %s", hostname, key.get_name(), fp,
                     self.known_hosts)


@dataclass
class Result:
    rc: int
    out: str
    err: str


class Remote:
    """One SSH connection: run commands, move files (SFTP)."""

    def __init__(self, server: Server, client: paramiko.SSHClient) -> None:
        self.server = server
        self.client = client
        self._sftp: paramiko.SFTPClient | None = None
        self.root = False
        self.root = self.run("id -u").out.strip() == "0"

    @property
    def sftp(self) -> paramiko.SFTPClient:
        if self._sftp is None:
            self._sftp = self.client.open_sftp()
        return self._sftp

    def run(self, command: str, *, sudo: bool = False, timeout: float = 600,
            check: bool = False) -> Result:
        """``command`` through the login shell; ``sudo``: as root, non-interactively (a
        sudo that asks for a password fails rather than waits)."""
        if sudo and not self.root:
            command = "sudo -n sh -c " + shlex.quote(command)
        _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        out = stdout.read().decode(errors="replace")
        err = stderr.read().decode(errors="replace")
        rc = stdout.channel.recv_exit_status()
        if sudo and not self.root and rc != 0 and "sudo:" in err and "password" in err:
            raise HostError(f"sudo -n refused for {self.server.username}: LatScope starts and "
                            "stops its services as root and needs passwordless sudo for that "
                            f"(sudo said: {err.strip().splitlines()[-1][:200]})")
        if check and rc != 0:
            tail = (err or out).strip().splitlines()[-5:]
            raise HostError(f"`{command.split()[0]} …` failed (exit {rc}): " + " | ".join(tail))
        return Result(rc, out, err)

    def python(self, d: str) -> str:
        """The Python that runs LatScope for install directory ``d``."""
        return f"{d}/venv/bin/python"

    def put_bytes(self, data: bytes, path: str, mode: int = 0o644) -> None:
        """Written under a temporary name with ``mode`` set first, then renamed: a secret is
        never readable by others, not even for a moment."""
        tmp = f"{path}.part"
        with self.sftp.open(tmp, "wb") as f:
            f.chmod(mode)
            f.write(data)
        self.sftp.posix_rename(tmp, path)

    def put_file(self, local: Path, path: str) -> None:
        tmp = f"{path}.part"
        self.sftp.put(str(local), tmp)
        self.sftp.posix_rename(tmp, path)

    def read_text(self, path: str) -> str | None:
        try:
            with self.sftp.open(path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return None

    def size(self, path: str) -> int | None:
        try:
            return self.sftp.stat(path).st_size
        except OSError:
            return None

    def close(self) -> None:
        if self._sftp is not None:
            self._sftp.close()
        self.client.close()


def connect(server: Server, fleet: Fleet, accept_new: bool = False) -> Remote:
    """A checked, authenticated connection to ``server``, or HostError with the reason."""
    known = Path(fleet.known_hosts).expanduser()
    client = paramiko.SSHClient()
    if known.exists():
        client.load_host_keys(str(known))
    client.set_missing_host_key_policy(_Policy(known, accept_new))
    where = f"{server.username or 'root'}@{server.address}:{server.port}"
    key_file = str(Path(fleet.identity_file).expanduser()) if fleet.identity_file else None
    try:
        client.connect(
            server.address, port=server.port, username=server.username or "root",
            key_filename=key_file, password=server.password,
            timeout=fleet.connect_timeout_s, banner_timeout=fleet.connect_timeout_s,
            auth_timeout=fleet.connect_timeout_s, look_for_keys=key_file is None,
            allow_agent=True)
    except HostError:
        client.close()
        raise
    except paramiko.BadHostKeyException as e:
        client.close()
        raise HostError(
            f"HOST KEY CHANGED for {known_hosts_name(server.address, server.port)}: the server "
            f"offers {e.key.get_name()} {fingerprint(e.key)}, {known} holds "
            f"{fingerprint(e.expected_key)}: refused (a new install, or someone in between); "
            f"if the change is expected, remove the old line: ssh-keygen -R "
            f"'{known_hosts_name(server.address, server.port)}' -f {known}") from None
    except paramiko.AuthenticationException as e:
        client.close()
        raise HostError(f"authentication refused for {where} ({type(e).__name__}: the key "
                        f"{key_file or '(agent / ~/.ssh)'} or user is not accepted)") from None
    except paramiko.SSHException as e:
        client.close()
        raise HostError(f"SSH to {where} failed: {_scrub(str(e), server)}") from None
    except (TimeoutError, OSError) as e:
        client.close()
        raise HostError(f"unreachable: {where}: {getattr(e, 'strerror', None) or e}") from None
    return Remote(server, client)


def _scrub(text: str, server: Server) -> str:
    return text.replace(server.password, "***") if server.password else text
