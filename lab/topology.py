"""The topology file (design §7/§8): hosts, bridges, links, routes, flows, sampling.

``load_topology(path)`` parses and validates a YAML file; every mistake is reported with the
file, the line, the field path (``links[2].a_addr[0]``), the bad value and what was expected.
The model lives here; the address and path rules are ``latscope.lab.routing`` (mixed into
``Topology``), the single source of truth: the namespace builder (``latscope.lab.netns``)
creates exactly the routes ``Topology.routes_for`` lists, and ``Topology.path_hosts``
simulates the same longest-prefix forwarding the kernel does. Error texts with file and
line come from ``latscope.lab.yaml_errors``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from latscope.lab.routing import Routing, check_reachability
from latscope.lab.yaml_errors import TopologyError, describe, line_index


def _to_interface(v: Any) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    if isinstance(v, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return v
    try:
        if not isinstance(v, str) or "/" not in v:
            raise ValueError
        return ipaddress.ip_interface(v)
    except ValueError:
        raise ValueError("expected an IPv4 or IPv6 address with prefix, like 10.1.0.1/24 or "
                         "fd00:1::1/64") from None


def _to_address(v: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return v
    try:
        return ipaddress.ip_address(v if isinstance(v, str) else "")
    except ValueError:
        raise ValueError("expected an IPv4 or IPv6 address without prefix, like 10.1.0.2 or "
                         "fd00:1::2") from None


def _to_network(v: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network | str:
    if v in ("default", "default6") or isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return v
    try:
        if not isinstance(v, str) or "/" not in v:
            raise ValueError
        return ipaddress.ip_network(v)
    except ValueError:
        raise ValueError("expected a network like 10.2.0.0/24 or fd00:2::/64 (host bits zero), "
                         "or 'default' / 'default6'") from None


_AS_STR = PlainSerializer(str, when_used="json")
# Plain validators: one clear message instead of pydantic's per-union-branch errors.
IPInterface = Annotated[ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                        PlainValidator(_to_interface), _AS_STR]
IPAddress = Annotated[ipaddress.IPv4Address | ipaddress.IPv6Address,
                      PlainValidator(_to_address), _AS_STR]
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
RouteDst = Annotated[ipaddress.IPv4Network | ipaddress.IPv6Network | str,
                     PlainValidator(_to_network), _AS_STR]

NAME_RE = re.compile(r"^[a-z0-9-]{1,12}$")
ROLES = ("manager", "host", "vm", "container")
MIN_TBF_BYTES = 1600    # a 1500-byte MTU frame with its link-layer header fits

# tc's units (iproute2 get_rate/get_size/get_time): rates are SI, sizes are binary.
_RATE_UNITS = {"bit": 1, "kbit": 1e3, "mbit": 1e6, "gbit": 1e9, "tbit": 1e12,
               "bps": 8, "kbps": 8e3, "mbps": 8e6, "gbps": 8e9}
_SIZE_UNITS = {"b": 1, "k": 1024, "kb": 1024, "kbit": 1024 / 8, "m": 1024**2, "mb": 1024**2,
               "mbit": 1024**2 / 8, "g": 1024**3, "gb": 1024**3, "gbit": 1024**3 / 8}
_TIME_UNITS = {"s": 1e6, "sec": 1e6, "ms": 1e3, "msec": 1e3, "us": 1, "usec": 1}
_QTY_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-z]*)\s*$")


def _parse_qty(value: Any, units: dict[str, float], default_unit: str, what: str) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected {what}")
    if isinstance(value, int | float):
        return float(value) * units[default_unit]
    m = _QTY_RE.match(str(value).lower())
    if not m or (m.group(2) not in units and m.group(2) != ""):
        raise ValueError(f"expected {what}")
    return float(m.group(1)) * units[m.group(2) or default_unit]


def parse_rate(value: Any) -> int:
    """A tc-style rate (``50mbit``, ``2mbit``, ``1gbit``, ``500kbps``) in bits per second."""
    bits = _parse_qty(value, _RATE_UNITS, "bit", "a rate like 50mbit, 2mbit or 1gbit")
    if bits <= 0:
        raise ValueError("expected a positive rate like 50mbit")
    return int(bits)


def parse_size(value: Any) -> int:
    """A tc-style size (``32kbit``, ``64kb``, ``1500``) in bytes (tc: k = 1024)."""
    return int(_parse_qty(value, _SIZE_UNITS, "b", "a size like 32kbit, 64kb or 1500"))


def parse_time_us(value: Any) -> int:
    """A tc-style time (``50ms``, ``200us``, ``1s``) in microseconds; a bare number is ms."""
    return int(_parse_qty(value, _TIME_UNITS, "ms", "a time like 50ms or 200us"))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Clock(_Model):
    offset_ns: int = 0
    drift_ppm: float = 0.0


def _check_name(v: str | None) -> str | None:
    if v is not None and not NAME_RE.match(v):
        raise ValueError("expected a name of 1-12 characters from a-z, 0-9 and '-'")
    return v


class Host(_Model):
    name: str
    role: Literal["manager", "host", "vm", "container"] = "host"
    parent: str | None = None
    clock: Clock | None = None      # a container without one shares its parent's kernel clock
    sync_addr: IPAddress | None = None

    _names = field_validator("name", "parent")(_check_name)


class Bridge(_Model):
    name: str
    host: str
    addr: list[IPInterface] = []

    _names = field_validator("name")(_check_name)


class Tbf(_Model):
    """Token bucket shaping one end's egress; exactly one of latency/limit."""
    rate: str | int
    burst: str | int
    latency: str | int | None = None
    limit: str | int | None = None

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str | int) -> str | int:
        if parse_rate(v) // 8 >= 2**32:
            raise ValueError("expected a rate below 34gbit (tbf's 32-bit byte rate)")
        return v

    @field_validator("burst", "limit")
    @classmethod
    def _size(cls, v: str | int | None) -> str | int | None:
        if v is not None and parse_size(v) < MIN_TBF_BYTES:
            # tbf drops every frame larger than its bucket: a smaller one is a black hole
            raise ValueError(f"expected a size of at least {MIN_TBF_BYTES} bytes (one full "
                             "frame), like 32kbit or 64kb")
        return v

    @field_validator("latency")
    @classmethod
    def _latency(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_time_us(v)
        return v

    @model_validator(mode="after")
    def _one_bound(self) -> Tbf:
        if (self.latency is None) == (self.limit is None):
            raise ValueError("expected exactly one of 'latency' (like 50ms) or 'limit' (bytes)")
        return self

    @property
    def rate_bps(self) -> int:
        return parse_rate(self.rate)

    @property
    def burst_bytes(self) -> int:
        return parse_size(self.burst)

    @property
    def latency_us(self) -> int | None:
        return None if self.latency is None else parse_time_us(self.latency)

    @property
    def limit_bytes(self) -> int | None:
        return None if self.limit is None else parse_size(self.limit)


class Link(_Model):
    a: str
    b: str
    a_addr: list[IPInterface] = []
    b_addr: list[IPInterface] = []
    a_tbf: Tbf | None = None
    b_tbf: Tbf | None = None

    def end(self, side: str) -> tuple[str, list[IPInterface], Tbf | None]:
        return ((self.a, self.a_addr, self.a_tbf) if side == "a"
                else (self.b, self.b_addr, self.b_tbf))


class Route(_Model):
    host: str
    dst: RouteDst          # a network, or "default" (family of via) / "default6"
    via: IPAddress

    @property
    def network(self) -> IPNetwork:
        if self.dst == "default":
            return ipaddress.ip_network("0.0.0.0/0" if self.via.version == 4 else "::/0")
        if self.dst == "default6":
            return ipaddress.ip_network("::/0")
        return self.dst

    @model_validator(mode="after")
    def _family(self) -> Route:
        if self.network.version != self.via.version:
            raise ValueError(f"dst {self.dst} and via {self.via} are of different IP families")
        return self


FLOW_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class Flow(_Model):
    name: str
    src: str
    dst: str
    proto: Literal["tcp", "udp"] = "tcp"
    family: Literal[4, 6] = 4
    port: int = Field(ge=1, le=65535)
    bytes: int | None = Field(default=None, gt=0)
    rate: str | int | None = None
    reader_delay_ms: float = Field(default=0.0, ge=0)
    read_size: int = Field(default=65536, gt=0)       # receiver's bytes per read()
    duration_s: float | None = Field(default=None, gt=0)  # paced flows: stop after this long
    dst_addr: IPAddress | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not FLOW_NAME_RE.match(v):
            raise ValueError("expected 1-32 characters from A-Z, a-z, 0-9, '_', '.', '-' "
                             "(it becomes a Kafka key and an InfluxDB tag)")
        return v

    @field_validator("rate")
    @classmethod
    def _rate(cls, v: str | int | None) -> str | int | None:
        if v is not None:
            parse_rate(v)
        return v

    @model_validator(mode="after")
    def _amount(self) -> Flow:
        if self.bytes is None and self.rate is None:
            raise ValueError("expected 'bytes' (bulk: as fast as it can) or 'rate' (paced)")
        if self.dst_addr is not None and self.dst_addr.version != self.family:
            raise ValueError(f"dst_addr {self.dst_addr} is not IPv{self.family} (family)")
        return self

    @property
    def rate_bps(self) -> int | None:
        return None if self.rate is None else parse_rate(self.rate)


class Sampling(_Model):
    size: int = Field(default=72400, ge=0)
    ports: list[Annotated[int, Field(ge=1, le=65535)]] = []
    filter_retrans: Literal[0, 1, True, False] = 1


class Topology(_Model, Routing):
    hosts: list[Host]
    bridges: list[Bridge] = []
    links: list[Link] = []
    routes: list[Route] = []
    flows: list[Flow] = []
    sampling: Sampling = Sampling()
    _source: str = PrivateAttr(default="<topology>")

    @property
    def source(self) -> str:
        """The file it was loaded from (for messages)."""
        return self._source

    # ---- lookups -------------------------------------------------------------------------
    def host(self, name: str) -> Host:
        for h in self.hosts:
            if h.name == name:
                return h
        raise KeyError(f"no host {name!r} in {self.source}")

    def bridge(self, name: str) -> Bridge:
        for b in self.bridges:
            if b.name == name:
                return b
        raise KeyError(f"no bridge {name!r} in {self.source}")

    def flow(self, name: str) -> Flow:
        for f in self.flows:
            if f.name == name:
                return f
        raise KeyError(f"no flow {name!r} in {self.source}")

    def clock_host(self, name: str) -> str:
        """The host whose clock ``name`` reads: a container without a clock of its own runs
        on its parent's kernel."""
        h = self.host(name)
        if h.clock is None and h.role == "container" and h.parent is not None and h.parent != name:
            return self.clock_host(h.parent)
        return name

    def clock(self, name: str) -> Clock:
        """The injected clock error of a host: its own, a container's parent's, else none."""
        return self.host(self.clock_host(name)).clock or Clock()

    @property
    def manager(self) -> Host:
        return next(h for h in self.hosts if h.role == "manager")

    def is_bridge(self, name: str) -> bool:
        return any(b.name == name for b in self.bridges)

    def namespace_of(self, endpoint: str) -> str:
        """The host whose namespace holds a link endpoint (a host, or a bridge's host)."""
        return self.bridge(endpoint).host if self.is_bridge(endpoint) else endpoint

    def summary(self) -> dict[str, Any]:
        """What ``latscope topology check --json`` prints."""
        return {
            "file": self.source,
            "hosts": [{"name": h.name, "role": h.role, "parent": h.parent,
                       "clock": self.clock(h.name).model_dump(),
                       "addresses": [str(a) for a in self.addresses(h.name)],
                       **({"sync_addr": str(self.sync_addr(h.name))}
                          if h.role != "manager" else {})} for h in self.hosts],
            "bridges": [{"name": b.name, "host": b.host, "addr": [str(a) for a in b.addr]}
                        for b in self.bridges],
            "links": [{"index": i, "a": lk.a, "b": lk.b,
                       "a_addr": [str(a) for a in lk.a_addr],
                       "b_addr": [str(a) for a in lk.b_addr],
                       "a_tbf": lk.a_tbf.model_dump() if lk.a_tbf else None,
                       "b_tbf": lk.b_tbf.model_dump() if lk.b_tbf else None}
                      for i, lk in enumerate(self.links)],
            "flows": [{**f.model_dump(mode="json", exclude_none=True),
                       "dst_addr": str(self.flow_dst_addr(f)),
                       "path_hosts": self.path_hosts(f)} for f in self.flows],
            "sampling": self.sampling.model_dump(),
        }


# ---- loading and error reporting --------------------------------------------------------------

def _cross_check(t: Topology) -> Iterator[tuple[str, str]]:
    """Problems pydantic cannot see: names, references, addresses and reachability."""
    hosts = {h.name: h for h in t.hosts}
    bridges = {b.name: b for b in t.bridges}
    seen: dict[str, str] = {}
    for i, h in enumerate(t.hosts):
        if h.name in seen:
            yield f"hosts[{i}].name", f"got {h.name!r}: duplicate host name (also {seen[h.name]})"
        seen[h.name] = f"hosts[{i}]"
    for i, b in enumerate(t.bridges):
        if b.name in seen:
            yield (f"bridges[{i}].name",
                   f"got {b.name!r}: name already used by {seen[b.name]} (hosts and bridges "
                   "share one name space: link endpoints name either)")
        seen[b.name] = f"bridges[{i}]"
        if b.name == "lo":
            yield f"bridges[{i}].name", "got 'lo': the loopback device's name; pick another"
        if b.host not in hosts:
            yield f"bridges[{i}].host", f"got {b.host!r}: expected one of the hosts {list(hosts)}"
    managers = [h.name for h in t.hosts if h.role == "manager"]
    if len(managers) != 1:
        yield "hosts", f"got {len(managers)} managers {managers}: expected exactly one host " \
                       "with role: manager (the clock reference)"
    for i, h in enumerate(t.hosts):
        if h.role in ("container", "vm") and h.parent is None:
            yield f"hosts[{i}].parent", f"missing: a {h.role} needs a parent host"
        if h.parent is not None:
            if h.parent not in hosts:
                yield f"hosts[{i}].parent", f"got {h.parent!r}: expected one of the hosts " \
                                            f"{list(hosts)}"
            elif h.parent == h.name:
                yield f"hosts[{i}].parent", f"got {h.parent!r}: a host cannot be its own parent"
            if h.role in ("manager", "host"):
                yield f"hosts[{i}].parent", f"got {h.parent!r}: only a vm or container has a parent"
    endpoints = list(hosts) + list(bridges)
    addr_seen: dict[Any, str] = {}
    for i, b in enumerate(t.bridges):
        for j, a in enumerate(b.addr):
            addr_seen[a.ip] = f"bridges[{i}].addr[{j}]"
    for i, link in enumerate(t.links):
        for side in ("a", "b"):
            name, addrs, _tbf = link.end(side)
            if name not in endpoints:
                yield f"links[{i}].{side}", f"got {name!r}: expected a host or bridge, one of " \
                                            f"{endpoints}"
            if name in bridges and addrs:
                yield (f"links[{i}].{side}_addr",
                       f"got {[str(a) for a in addrs]}: a bridge port has no address; put the "
                       f"host's address on the bridge (bridges[].addr of {name})")
            for j, a in enumerate(addrs):
                p = f"links[{i}].{side}_addr[{j}]"
                if a.ip in addr_seen:
                    yield p, f"got {a}: address already used at {addr_seen[a.ip]}"
                addr_seen[a.ip] = p
                if a.network.prefixlen == a.max_prefixlen:
                    yield p, f"got {a}: expected a prefix shorter than /{a.max_prefixlen} " \
                             "(the peer must be on the same network)"
        if link.a == link.b:
            yield f"links[{i}].b", f"got {link.b!r}: a link joins two different endpoints"
        if link.a in bridges and link.b in bridges:
            yield f"links[{i}]", "a link joins at least one host (bridge to bridge is unsupported)"
    for i, r in enumerate(t.routes):
        if r.host not in hosts:
            yield f"routes[{i}].host", f"got {r.host!r}: expected one of the hosts {list(hosts)}"
        elif not any(r.via in a.network for a in _safe_addrs(t, hosts[r.host])):
            nets = sorted({str(a.network) for a in _safe_addrs(t, hosts[r.host])})
            yield (f"routes[{i}].via", f"got {r.via}: expected a gateway on one of {r.host}'s "
                                       f"networks {nets} (the kernel refuses anything else)")
    for i, h in enumerate(t.hosts):
        if h.sync_addr is not None and t.owner(h.sync_addr) != h.name:
            yield f"hosts[{i}].sync_addr", f"got {h.sync_addr}: expected one of {h.name}'s " \
                                           f"addresses {[str(a.ip) for a in _safe_addrs(t, h)]}"
    names: set[str] = set()
    for i, f in enumerate(t.flows):
        if f.name in names:
            yield f"flows[{i}].name", f"got {f.name!r}: duplicate flow name"
        names.add(f.name)
        for key in ("src", "dst"):
            if getattr(f, key) not in hosts:
                yield f"flows[{i}].{key}", f"got {getattr(f, key)!r}: expected one of the hosts " \
                                           f"{list(hosts)}"
        if f.src == f.dst:
            yield f"flows[{i}].dst", f"got {f.dst!r}: a flow joins two different hosts"
        if f.dst_addr is not None and f.dst in hosts and t.owner(f.dst_addr) != f.dst:
            yield f"flows[{i}].dst_addr", f"got {f.dst_addr}: expected an address of {f.dst}"


def _safe_addrs(t: Topology, h: Host) -> list[IPInterface]:
    try:
        return t.addresses(h.name)
    except KeyError:
        return []


def parse_topology(data: Any, source: str = "<topology>", text: str | None = None) -> Topology:
    """Validate already-parsed YAML data; raises TopologyError listing every problem."""
    lines = line_index(text) if text is not None else {}
    if not isinstance(data, dict):
        raise TopologyError(source, [("", f"got {type(data).__name__}: expected a mapping with "
                                          "hosts, links, bridges, routes, flows, sampling")], lines)
    try:
        topo = Topology.model_validate(data)
        topo._source = source
    except ValidationError as e:
        problems = list(dict.fromkeys(describe(Topology, err) for err in e.errors()))   # dedupe branches
        raise TopologyError(source, problems, lines) from None
    problems = list(_cross_check(topo))
    if not problems:
        problems = list(check_reachability(topo))
    if problems:
        raise TopologyError(source, problems, lines)
    return topo


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology YAML file (design §8)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise TopologyError(str(path), [("", f"cannot read: {e.strerror}")], {}) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise TopologyError(str(path), [("", f"not valid YAML{where}: "
                                             f"{getattr(e, 'problem', e)}")], {}) from None
    return parse_topology(data, str(path), text)
