"""LatScope configuration: the original conf/ directory format, read unchanged, or one
``latscope.yaml`` holding the same sections plus ``kafka``, ``influxdb`` and ``agent``.

Every mistake is reported as ``FILE: field.path: got VALUE: expected ...``; unknown keys
are errors, not silently ignored.
"""

from __future__ import annotations

import ipaddress
import os
import stat
from dataclasses import dataclass
from dataclasses import field as dc_field
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from latscope.schemas.sampling import BUDGET_RECORDS_PER_S, JOIN_WINDOW_MS, effective_size

LEGACY_FILES = {
    "servers": "connect_info.yaml",
    "sampling": "sampling_info.yaml",
    "ping": "ping_info.yaml",
    "management": "management_server_info.yaml",
    "time_sync": "time_sync.yaml",
}
REPLACED_FILES = {
    "redis_info.yaml": "the `kafka` section of latscope.yaml",
    "database_info.yaml": "the `influxdb` section of latscope.yaml",
}
SINGLE_FILE = "latscope.yaml"


class ConfigError(ValueError):
    """A configuration mistake, already phrased for the user."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _ip(value: str) -> str:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise ValueError("an IPv4 or IPv6 address") from None
    return value


Port = Annotated[int, Field(ge=1, le=65535)]
Address = Annotated[str, Field(min_length=1)]


class Server(Strict):
    address: Address
    port: Port = 22
    username: str | None = None
    hostname: str
    password: str | None = Field(default=None, repr=False)  # legacy; prefer SSH keys
    metadata_key: int
    novm: int | None = None
    isvm: int | None = None
    iscontainer: int | None = None
    container_address: list[Address] = []
    eth: list[str] = []
    other_address: list[Address] = []

    _check_address = field_validator("address")(lambda cls, v: _ip(v))

    @property
    def kind(self) -> Literal["host", "vm", "container"]:
        return "vm" if self.isvm is not None else (
            "container" if self.iscontainer is not None else "host")

    @property
    def parent_key(self) -> int | None:
        return self.isvm if self.isvm is not None else self.iscontainer


class Sampling(Strict):
    size: int = Field(default=72400, ge=0)
    interval: float = Field(default=1.0, gt=0)
    ports: list[Port] = []
    filter_retrans: bool = True

    @field_validator("filter_retrans", mode="before")
    @classmethod
    def _zero_or_one(cls, v: object) -> bool:
        if v in (0, 1) and not isinstance(v, float):
            return bool(v)
        raise ValueError("0 or 1")

    @property
    def stride(self) -> int:
        """Bytes between sampled bytes; the legacy `size: 0` means one MSS."""
        return effective_size(self.size)


class SyncTarget(Strict):
    address: Address
    port: Port = 51111
    eth: list[str] = []

    _check_address = field_validator("address")(lambda cls, v: _ip(v))


class Ping(Strict):
    management_server: Address
    servers: list[SyncTarget] = []

    _check_address = field_validator("management_server")(lambda cls, v: _ip(v))


class Management(Strict):
    address: Address
    port: Port = 22
    username: str | None = None
    hostname: str = "manager"
    password: str | None = Field(default=None, repr=False)
    eth: list[str] = []


class TimeSync(Strict):
    time_interval: float = Field(default=64, gt=0)

    @property
    def interval_s(self) -> float:
        return self.time_interval


def read_secret(path: str | Path, field: str) -> str:
    """A secret kept in a file only its owner can read (a group- or world-readable one is
    refused: whoever can read it is that principal). Errors name the field and the file,
    never the content."""
    p = Path(path).expanduser()
    try:
        with open(p) as f:
            mode = os.fstat(f.fileno()).st_mode
            if mode & 0o077:
                raise ConfigError(f"{field}: {p}: readable by group or others (mode "
                                  f"{stat.S_IMODE(mode):04o}): a secret's file must be "
                                  f"private: chmod 600 {p}")
            value = f.read().strip()
    except OSError as e:
        raise ConfigError(f"{field}: cannot read {p}: {e.strerror}") from None
    if not value:
        raise ConfigError(f"{field}: {p} is empty")
    return value


# The SASL password when the config names no file: services started by a supervisor.
KAFKA_PASSWORD_ENV = "LATSCOPE_KAFKA_PASSWORD"


class Kafka(Strict):
    bootstrap: str = "127.0.0.1:9092"
    settings: dict[str, str | int | bool] = {}  # extra librdkafka settings (security, SASL…)
    password_file: str | None = None   # sasl.password, from a file only its owner can read

    def client_settings(self) -> dict[str, str | int | bool]:
        """``settings`` with ``sasl.password`` filled in: from ``password_file``, else (a SASL
        username and no password given) from ``$LATSCOPE_KAFKA_PASSWORD``."""
        s = dict(self.settings)
        if self.password_file:
            if "sasl.password" in s:
                raise ConfigError("kafka: both password_file and settings.sasl.password are "
                                  "given: keep one (password_file)")
            s["sasl.password"] = read_secret(self.password_file, "kafka.password_file")
        elif "sasl.username" in s and "sasl.password" not in s:
            env = os.environ.get(KAFKA_PASSWORD_ENV)
            if not env:
                raise ConfigError(f"kafka.settings.sasl.username is set but no password: give "
                                  f"kafka.password_file or ${KAFKA_PASSWORD_ENV}")
            s["sasl.password"] = env
        return s


class InfluxDB(Strict):
    url: str = "http://127.0.0.1:8086"
    org: str = "latscope"
    bucket: str = "latscope"
    token: str | None = Field(default=None, repr=False)
    token_file: str | None = None

    def token_value(self) -> str | None:
        if self.token:
            return self.token
        if self.token_file:
            return read_secret(self.token_file, "influxdb.token_file")
        return None


class Agent(Strict):
    linger_ms: int = Field(default=50, ge=1, le=10_000)
    # The stream worker's join window + lateness (its --window + --lateness, ms): every
    # host's record of a byte must reach Kafka within it of the first.
    join_window_ms: int = Field(default=JOIN_WINDOW_MS, ge=100)
    # How long a TCP byte still inside a host waits for its next hit; unset: the longest
    # the join window allows (the agent refuses a longer one).
    hold_ms: int | None = Field(default=None, ge=1)
    rate_cap_per_s: int = Field(default=200_000, ge=1)
    # Records/s a host's agent may publish; past it the fleet samples more sparsely, every
    # host alike (the stride level: producers/stride_level.py). 0: no budget.
    budget_records_per_s: int = Field(default=BUDGET_RECORDS_PER_S, ge=0)
    ring_buffer_bytes: int = Field(default=8 << 20, ge=4096)
    metrics_port: Port | None = None
    # tcp_tx writes the resend mark into covered sockets' segments (8 TCP option bytes on
    # every data segment): every host then knows a resend. Off: nothing on the wire changes.
    resend_mark: bool = False
    # UDP's socket points (sock_send, sock_recv): their sys_enter hooks run at every system
    # call of every process on the host while the agent runs. Off: UDP starts at ip_out.
    udp_socket_points: bool = False
    # The data path in C (producers/native); false: the Python reference path it is held to
    # (`latscope agent --python-path` for one run).
    native: bool = True


class Fleet(Strict):
    """How ``latscope fleet`` reaches and lays out the servers (latscope.yaml ``fleet:``)."""

    # Per server; ``{hostname}`` is replaced, so servers sharing a filesystem stay apart.
    install_dir: str = "/opt/latscope"
    known_hosts: str = "~/.ssh/known_hosts"
    identity_file: str | None = None   # else the SSH agent and ~/.ssh/id_*
    parallel: int = Field(default=8, ge=1, le=256)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    state_dir: str | None = None       # management side; default <cache>/fleet
    worker_web_port: Port = 6066

    def host_dir(self, hostname: str) -> str:
        return self.install_dir.replace("{hostname}", hostname)


class Config(Strict):
    servers: list[Server] = []
    sampling: Sampling = Sampling()
    ping: Ping | None = None
    management: Management | None = None
    time_sync: TimeSync = TimeSync()
    kafka: Kafka = Kafka()
    influxdb: InfluxDB = InfluxDB()
    agent: Agent = Agent()
    fleet: Fleet = Fleet()

    def server(self, key: int) -> Server | None:
        return next((s for s in self.servers if s.metadata_key == key), None)


@dataclass(frozen=True)
class Loaded:
    config: Config
    sources: dict[str, Path]  # section -> file it came from
    notes: list[str]          # things the user should know (replaced legacy files)
    warnings: list[str] = dc_field(default_factory=list)   # works, but should change


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML: {e}") from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read: {e.strerror}") from None


def _expected(err: dict) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        return "unknown key (not part of the format)"
    if kind == "missing":
        return "required key is missing"
    return "expected " + msg.removeprefix("Value error, ").removeprefix("Input should be ")


def _describe(e: ValidationError, sources: dict[str, Path], fallback: Path) -> str:
    lines = []
    for err in e.errors():
        loc = [str(p) for p in err["loc"]]
        section = loc[0] if loc else ""
        path = sources.get(section, fallback)
        legacy = path.name in LEGACY_FILES.values()
        # In a legacy file the section name is the file itself; connect_info's list is `servers`.
        shown = loc[1:] if legacy and section != "servers" else loc
        field = _index_path(shown) if shown else "(top level)"
        got = "" if err["type"] in ("missing", "extra_forbidden") else f"got {_shown(loc, err['input'])}: "
        lines.append(f"{path}: {field}: {got}{_expected(err)}")
    return "\n".join(lines)


# Fields whose values are secrets: an error names the field and what was expected, never the
# value (nor a section or list that holds one).
_SECRET_PARTS = ("password", "token", "secret", "key", "credential")


def _secret(loc: list[str]) -> bool:
    if any(p in ("settings",) for p in loc[:2]) and loc and loc[0] == "kafka":
        return True    # kafka.settings: SASL passwords, TLS key passwords, …
    return any(s in p.lower() for p in loc for s in _SECRET_PARTS if p != "metadata_key")


def _shown(loc: list[str], value: Any) -> str:
    """What an error may show of a bad value: scalars of ordinary fields; for a mapping or
    list only its type (it may hold a secret); for a secret field nothing."""
    if _secret(loc):
        return "a value (not shown: secret)"
    if isinstance(value, dict):
        return f"a mapping with keys {sorted(map(str, value))}"
    if isinstance(value, list) and any(isinstance(v, dict | list) for v in value):
        return f"a list of {len(value)}"
    return repr(value)


def _index_path(parts: list[str]) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if p.isdigit() else (f".{p}" if out else p)
    return out


def load(path: str | Path) -> Loaded:
    """Load a conf directory (legacy files and/or latscope.yaml) or a single latscope.yaml."""
    path = Path(path).expanduser()
    raw: dict[str, Any] = {}
    sources: dict[str, Path] = {}
    notes: list[str] = []
    if path.is_dir():
        for section, name in LEGACY_FILES.items():
            f = path / name
            if f.exists():
                data = _read_yaml(f)
                if section == "servers":
                    if not isinstance(data, dict) or set(data) - {"servers"}:
                        extra = sorted(set(data) - {"servers"}) if isinstance(data, dict) else data
                        raise ConfigError(f"{f}: expected one key `servers:` (a list), got {extra!r}")
                    data = data.get("servers") or []
                raw[section], sources[section] = data, f
        for name, replacement in REPLACED_FILES.items():
            if (path / name).exists():
                notes.append(f"{path / name}: not read: LatScope uses {replacement} instead")
        single = path / SINGLE_FILE
    else:
        single = path
        if not single.exists():
            raise ConfigError(f"{single}: no such file or directory")
    if single.exists():
        data = _read_yaml(single)
        if not isinstance(data, dict):
            raise ConfigError(f"{single}: expected a mapping of sections, got {type(data).__name__}")
        for section, value in data.items():
            if section in sources:
                raise ConfigError(f"{single}: {section}: also given by {sources[section]}; "
                                  "keep one of the two")
            raw[section], sources[section] = value, single
    if not sources:
        raise ConfigError(f"{path}: no configuration files found (expected "
                          f"{SINGLE_FILE} or {', '.join(LEGACY_FILES.values())})")
    try:
        config = Config.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(_describe(e, sources, single)) from None
    _cross_check(config, sources, single)
    _check_inline_secrets(config, sources, single)
    return Loaded(config, sources, notes, _password_warnings(config, sources, single))


def _password_warnings(config: Config, sources: dict[str, Path], fallback: Path) -> list[str]:
    """The original format's SSH passwords still work, but say they are there (never what
    they are): keys are what `latscope fleet` expects."""
    where = sources.get("servers", fallback)
    out = [f"{where}: servers[{i}].password: an SSH password is set for {s.hostname}: it "
           "works, but prefer a key (fleet.identity_file or the SSH agent) and remove it"
           for i, s in enumerate(config.servers) if s.password is not None]
    if config.management is not None and config.management.password is not None:
        out.append(f"{sources.get('management', fallback)}: password: an SSH password is set: "
                   "LatScope never uses it for the management server; remove it")
    return out


def _inline_secret(key: str) -> bool:
    return "password" in key or "secret" in key or key == "ssl.key.pem"


def _check_inline_secrets(config: Config, sources: dict[str, Path], fallback: Path) -> None:
    """A secret written into the config itself is only as private as that file: refuse it in
    a file that group or others can read (the config of a secure stack names files)."""
    found = [(f"kafka.settings.{k}", sources.get("kafka", fallback))
             for k in config.kafka.settings if _inline_secret(k)]
    if config.influxdb.token:
        found.append(("influxdb.token", sources.get("influxdb", fallback)))
    for field, path in found:
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise ConfigError(f"{path}: {field}: a secret in a file readable by group or others "
                              f"(mode {mode:04o}): chmod 600 {path}, or keep the secret in a "
                              "file of its own (kafka.password_file, influxdb.token_file)")


def _cross_check(config: Config, sources: dict[str, Path], fallback: Path) -> None:
    errors = []
    where = sources.get("servers", fallback)
    keys: dict[int, int] = {}
    for i, s in enumerate(config.servers):
        if s.metadata_key in keys:
            errors.append(f"{where}: servers[{i}].metadata_key: got {s.metadata_key}: expected a "
                          f"unique key (servers[{keys[s.metadata_key]}] has it)")
        keys.setdefault(s.metadata_key, i)
        if s.isvm is not None and s.iscontainer is not None:
            errors.append(f"{where}: servers[{i}]: expected one of isvm / iscontainer, got both")
    for i, s in enumerate(config.servers):
        field = "isvm" if s.isvm is not None else "iscontainer"
        if s.parent_key is not None and s.parent_key not in keys:
            errors.append(f"{where}: servers[{i}].{field}: got {s.parent_key}: expected the "
                          f"metadata_key of another server (known: {sorted(keys)})")
    if config.ping is not None and config.servers:
        known = {a for s in config.servers for a in (s.address, *s.other_address)}
        pwhere = sources.get("ping", fallback)
        for i, t in enumerate(config.ping.servers):
            if t.address not in known:
                errors.append(f"{pwhere}: servers[{i}].address: got {t.address!r}: expected the "
                              "address of a server in connect_info")
    if errors:
        raise ConfigError("\n".join(errors))
