"""Kafka security for the local stack (design §10): SASL/SCRAM over TLS, ACLs, no
auto-created topics.

Kafka is LatScope's trust boundary: agents may write layer events only, only sync writes
``latscope.clock``, the worker reads both and writes breakdowns, dead letters and its own
Faust topics, a reader reads for the tools. Each is a SCRAM user; the broker's
authorizer (KRaft StandardAuthorizer) denies what no ACL allows, and since no client may
create topics, the stack creates LatScope's topics as ``schemas/records.py`` defines them.

Everything lives under ``<run_dir>/security`` (mode 0700): a CA made here (its key is not
kept), the broker's key and certificate, one generated password per user and one ready
``latscope.yaml`` per principal (``clients/NAME.yaml``), each secret file mode 0600. A
password is only ever written to a file: the broker reads the admin's from its
``server.properties`` (0600), ``kafka-storage format`` gets it through a java ``@argfile``
deleted right after, the clients read theirs through ``kafka.password_file``.

Two super users, neither a client of the data: ``admin`` (SCRAM, added at format time; the
broker's inter-broker login and the stack's own admin client, which creates topics, users
and ACLs) and the broker's certificate, which the controller listener asks for (mutual TLS),
so no process can reach the controller without the broker's key.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from latscope.schemas.records import (
    STRIDE_GROUP,
    TOPIC_BREAKDOWNS,
    TOPIC_CLOCK,
    TOPIC_CLOCK_SAMPLES,
    TOPIC_DEAD_LETTER,
    TOPIC_FLOW_STATS,
    TOPIC_LAYER_EVENTS,
    TOPIC_STRIDE,
)

MECHANISM = "SCRAM-SHA-512"
SCRAM_ITERATIONS = 8192
ADMIN = "admin"
BROKER_CN = "latscope-broker"
PRINCIPALS = ("agent", "sync", "worker", "reader")
WORKER_APP_ID = "latscope-stream"   # the stream worker's default Faust app id (group, topics)
READER_GROUPS = ("latscope-read-", "latscope-status-")   # kafka.consumer(), sync status
SECURITY_PROTOCOL = "SASL_SSL"


@dataclass(frozen=True)
class Rule:
    """ALLOW ``operations`` on a resource to ``User:principal``."""

    principal: str
    resource: str          # "topic" | "group"
    name: str
    prefixed: bool
    operations: tuple[str, ...]


def acl_rules(app_id: str = WORKER_APP_ID) -> list[Rule]:
    """Who may do what: everything not listed here is denied."""
    return [
        *(Rule("agent", "topic", t, False, ("WRITE", "DESCRIBE"))
          for t in (TOPIC_LAYER_EVENTS, TOPIC_FLOW_STATS)),
        # the stride demands: every agent writes its own and reads everyone's (no group
        # is joined; the id only has to be allowed)
        Rule("agent", "topic", TOPIC_STRIDE, False, ("READ", "WRITE", "DESCRIBE")),
        Rule("agent", "group", STRIDE_GROUP, True, ("READ",)),
        # ClockPublisher checks the model topic is compacted (DescribeConfigs).
        *(Rule("sync", "topic", t, False, ("WRITE", "DESCRIBE", "DESCRIBE_CONFIGS"))
          for t in (TOPIC_CLOCK, TOPIC_CLOCK_SAMPLES)),
        *(Rule("worker", "topic", t, False, ("READ", "DESCRIBE"))
          for t in (TOPIC_LAYER_EVENTS, TOPIC_CLOCK, TOPIC_FLOW_STATS)),
        *(Rule("worker", "topic", t, False, ("WRITE", "DESCRIBE"))
          for t in (TOPIC_BREAKDOWNS, TOPIC_DEAD_LETTER)),
        # Faust's changelogs and assignor topic are named after the app id, so is its group.
        Rule("worker", "topic", app_id, True, ("ALL",)),
        Rule("worker", "group", app_id, True, ("READ", "DESCRIBE")),
        Rule("reader", "topic", "latscope.", True, ("READ", "DESCRIBE")),
        *(Rule("reader", "group", g, True, ("READ",)) for g in READER_GROUPS),
    ]


def write_private(path: Path, data: str | bytes, mode: int = 0o600) -> None:
    """Write a file that is ``mode`` from its first byte (never briefly world-readable)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data.encode() if isinstance(data, str) else data)
    os.chmod(tmp, mode)
    tmp.replace(path)


class KafkaSecurity:
    """The files of one secure stack (``<run_dir>/security``) and what is made of them."""

    def __init__(self, run_dir: Path, host: str = "127.0.0.1") -> None:
        self.root = run_dir / "security"
        self.host = host
        self.ca = self.root / "ca.pem"
        self.broker_pem = self.root / "broker.pem"   # key + certificate chain (Kafka PEM)
        self.users = self.root / "users"
        self.clients = self.root / "clients"

    def exists(self) -> bool:
        return self.root.is_dir()

    def password_file(self, user: str) -> Path:
        return self.users / f"{user}.password"

    def password(self, user: str) -> str:
        return self.password_file(user).read_text().strip()

    def client_config_file(self, principal: str) -> Path:
        return self.clients / f"{principal}.yaml"

    # -- material -----------------------------------------------------------------------------
    def ensure_material(self) -> None:
        """CA, broker certificate and passwords, made once (a re-run keeps them)."""
        for d in (self.root, self.users, self.clients):
            d.mkdir(parents=True, exist_ok=True)
            os.chmod(d, 0o700)
        if not (self.ca.exists() and self.broker_pem.exists()):
            self._make_certificates()
        for user in (ADMIN, *PRINCIPALS):
            if not self.password_file(user).exists():
                write_private(self.password_file(user), secrets.token_urlsafe(32) + "\n")

    def _make_certificates(self) -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        now = datetime.datetime.now(datetime.UTC)
        start, end = now - datetime.timedelta(hours=1), now + datetime.timedelta(days=3650)

        def name(cn: str) -> x509.Name:
            return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

        ca_key = ec.generate_private_key(ec.SECP256R1())
        ca_name = name("LatScope local CA")
        ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(start).not_valid_after(end)
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                           False), critical=True)
              .sign(ca_key, hashes.SHA256()))
        key = ec.generate_private_key(ec.SECP256R1())
        sans: list[x509.GeneralName] = [x509.DNSName("localhost"),
                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(self.host)))
        except ValueError:
            sans.append(x509.DNSName(self.host))
        cert = (x509.CertificateBuilder().subject_name(name(BROKER_CN)).issuer_name(ca_name)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName(list(dict.fromkeys(sans))), False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), False)
                .sign(ca_key, hashes.SHA256()))
        pem = serialization.Encoding.PEM
        key_pem = key.private_bytes(pem, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        write_private(self.broker_pem, key_pem + cert.public_bytes(pem) + ca.public_bytes(pem))
        write_private(self.ca, ca.public_bytes(pem), mode=0o644)

    # -- the broker ---------------------------------------------------------------------------
    def server_properties(self, port: int, controller_port: int) -> list[str]:
        """``server.properties`` lines (the admin's password among them: the file is 0600)."""
        h = self.host
        jaas = (f'org.apache.kafka.common.security.scram.ScramLoginModule required '
                f'username="{ADMIN}" password="{self.password(ADMIN)}";')
        return [
            f"listeners=SASL_SSL://{h}:{port},CONTROLLER://{h}:{controller_port}",
            f"advertised.listeners=SASL_SSL://{h}:{port}",
            "listener.security.protocol.map=SASL_SSL:SASL_SSL,CONTROLLER:SSL",
            "inter.broker.listener.name=SASL_SSL",
            f"sasl.enabled.mechanisms={MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={MECHANISM}",
            f"listener.name.sasl_ssl.{MECHANISM.lower()}.sasl.jaas.config={jaas}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.broker_pem}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.ca}",
            "listener.name.controller.ssl.client.auth=required",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{ADMIN};User:CN={BROKER_CN}",
            "allow.everyone.if.no.acl.found=false",
        ]

    def format_argfile(self, java_args: Iterable[str]) -> Path:
        """A java ``@argfile`` (0600) holding a whole command: ``kafka-storage format
        --add-scram`` needs the admin's password, which must not be on a command line."""
        args = [*java_args, "--add-scram",
                f"{MECHANISM}=[name={ADMIN},iterations={SCRAM_ITERATIONS},"
                f"password={self.password(ADMIN)}]"]
        if any(c.isspace() or c in "\"'\\#" for a in args for c in a):
            raise ValueError("format arguments must not contain spaces, quotes or backslashes")
        path = self.root / "format.args"
        write_private(path, "\n".join(args) + "\n")
        return path

    # -- clients ------------------------------------------------------------------------------
    def client_settings(self, user: str) -> dict[str, str]:
        """librdkafka settings for ``user`` without the password (that comes from its file)."""
        return {"security.protocol": SECURITY_PROTOCOL, "sasl.mechanism": MECHANISM,
                "sasl.username": user, "ssl.ca.location": str(self.ca)}

    def admin_settings(self) -> dict[str, str]:
        """The stack's own admin client (password included: used in process only)."""
        return {**self.client_settings(ADMIN), "sasl.password": self.password(ADMIN)}

    def write_client_configs(self, bootstrap: str, influx: dict[str, str] | None) -> dict[str, Path]:
        """One ready ``latscope.yaml`` per principal (``--config clients/NAME.yaml``); the
        worker's and the reader's carry the stack's InfluxDB too. No secret inside: each
        names its password file."""
        import yaml

        out = {}
        for p in PRINCIPALS:
            doc: dict = {"kafka": {"bootstrap": bootstrap,
                                   "password_file": str(self.password_file(p)),
                                   "settings": self.client_settings(p)}}
            if influx is not None and p in ("worker", "reader"):
                doc["influxdb"] = influx
            head = (f"# LatScope client configuration for the Kafka principal `{p}`\n"
                    f"# (written by `latscope stack up --secure`; use with --config)\n")
            path = self.client_config_file(p)
            write_private(path, head + yaml.safe_dump(doc, sort_keys=False))
            out[p] = path
        return out

    # -- after the broker is up ---------------------------------------------------------------
    def apply(self, bootstrap: str, topics: dict[str, tuple[int, dict[str, str]]],
              app_id: str = WORKER_APP_ID, timeout: float = 30.0) -> None:
        """Users, topics and ACLs, as the admin; idempotent (every ``stack up`` runs it)."""
        from confluent_kafka.admin import (
            AclBinding,
            AclOperation,
            AclPermissionType,
            ResourcePatternType,
            ResourceType,
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        from latscope import kafka

        ks = kafka.KafkaSettings(bootstrap, self.admin_settings())
        adm = kafka.admin(ks)
        info = ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS)
        ups = [UserScramCredentialUpsertion(u, info, self.password(u).encode())
               for u in PRINCIPALS]
        for user, fut in adm.alter_user_scram_credentials(ups, request_timeout=timeout).items():
            try:
                fut.result(timeout)
            except Exception as e:   # the error names the user, never the password
                raise RuntimeError(f"kafka: SCRAM credentials for {user}: {e}") from None
        kafka.ensure_topics(ks, topics, timeout)
        bindings = [
            AclBinding(ResourceType[r.resource.upper()], r.name,
                       ResourcePatternType.PREFIXED if r.prefixed else ResourcePatternType.LITERAL,
                       f"User:{r.principal}", "*", AclOperation[op], AclPermissionType.ALLOW)
            for r in acl_rules(app_id) for op in r.operations]
        for binding, fut in adm.create_acls(bindings, request_timeout=timeout).items():
            try:
                fut.result(timeout)
            except Exception as e:
                raise RuntimeError(f"kafka: ACL {binding}: {e}") from None
