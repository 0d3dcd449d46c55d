"""The embedded local stack (design §6): one Kafka broker and one InfluxDB, cached and run
under ``cache_dir()``. ``up`` is idempotent, ``down`` leaves no process behind, ``status``
asks the services themselves."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from latscope.paths import cache_dir
from latscope.schemas.records import TOPICS
from latscope.stack.influxdb import LocalInfluxDB
from latscope.stack.kafka import LocalKafka
from latscope.stack.security import PRINCIPALS, WORKER_APP_ID

KAFKA_VERSION = "4.1.1"
INFLUXDB_VERSION = "v2.7.12"


@dataclass(frozen=True)
class StackSettings:
    cache: Path = field(default_factory=cache_dir)
    run_dir: Path | None = None  # service data and logs; default <cache>/run
    kafka_port: int = 9092
    # The address the broker listens on and advertises: another host's agents must reach it.
    kafka_host: str = "127.0.0.1"
    kafka_controller_port: int | None = None  # default: kafka_port + 1
    influx_port: int = 8086
    org: str = "latscope"
    bucket: str = "latscope"
    kafka_version: str = KAFKA_VERSION
    influxdb_version: str = INFLUXDB_VERSION
    # SASL/SCRAM over TLS with ACLs (stack/security.py); a run directory that was made
    # secure stays secure whatever this says.
    secure: bool = False
    worker_app_id: str = WORKER_APP_ID   # the Faust app id whose topics/group the worker owns

    @classmethod
    def from_env(cls, **overrides: object) -> StackSettings:
        """Defaults, then LATSCOPE_* environment variables, then explicit overrides."""
        env = {
            "kafka_port": os.environ.get("LATSCOPE_KAFKA_PORT"),
            "influx_port": os.environ.get("LATSCOPE_INFLUX_PORT"),
            "run_dir": os.environ.get("LATSCOPE_RUN_DIR"),
            "kafka_host": os.environ.get("LATSCOPE_KAFKA_HOST"),
        }
        values: dict[str, object] = {k: v for k, v in env.items() if v}
        values.update({k: v for k, v in overrides.items() if v is not None})
        for key in ("kafka_port", "influx_port"):
            if key in values:
                values[key] = int(values[key])  # type: ignore[call-overload]
        for key in ("cache", "run_dir"):
            if key in values:
                values[key] = Path(values[key])  # type: ignore[arg-type]
        return cls(**values)  # type: ignore[arg-type]

    @property
    def runs(self) -> Path:
        return self.run_dir or self.cache / "run"

    def kafka(self) -> LocalKafka:
        return LocalKafka(self.cache, self.runs, self.kafka_version, self.kafka_port,
                          self.kafka_controller_port or self.kafka_port + 1,
                          host=self.kafka_host, secure=self.secure)

    def influxdb(self) -> LocalInfluxDB:
        return LocalInfluxDB(self.cache, self.runs, self.influxdb_version, self.influx_port,
                             self.org, self.bucket)


@dataclass(frozen=True)
class StackInfo:
    kafka_up: bool
    kafka_bootstrap: str
    kafka_managed: bool
    influx_up: bool
    influx_url: str
    influx_org: str
    influx_bucket: str
    influx_token: str | None
    influx_managed: bool
    kafka_security: str = "PLAINTEXT"
    client_configs: dict[str, str] = field(default_factory=dict)  # principal -> config file

    def as_json(self) -> dict:
        """The contract of design §8 (secrets left out; a secure stack adds its protocol and
        the client configuration files, which name password files, never a password)."""
        kafka: dict = {"up": self.kafka_up, "bootstrap": self.kafka_bootstrap,
                       "managed": self.kafka_managed}
        if self.kafka_security != "PLAINTEXT":
            kafka |= {"security": self.kafka_security, "client_configs": self.client_configs}
        return {
            "kafka": kafka,
            "influxdb": {"up": self.influx_up, "url": self.influx_url, "org": self.influx_org,
                         "bucket": self.influx_bucket, "managed": self.influx_managed},
        }


def status(settings: StackSettings) -> StackInfo:
    kafka, influx = settings.kafka(), settings.influxdb()
    configs = {}
    if kafka.security:
        configs = {p: str(f) for p in PRINCIPALS
                   if (f := kafka.security.client_config_file(p)).exists()}
    return StackInfo(
        kafka_up=kafka.up(), kafka_bootstrap=kafka.bootstrap, kafka_managed=kafka.service.running(),
        influx_up=influx.healthy() and influx.authorized(), influx_url=influx.url,
        influx_org=settings.org, influx_bucket=settings.bucket, influx_token=influx.token(),
        influx_managed=influx.service.running(),
        kafka_security="SASL_SSL" if kafka.secure else "PLAINTEXT", client_configs=configs)


def provision(settings: StackSettings) -> None:
    """Fetch and build what is missing (cached: a no-op the second time)."""
    settings.kafka().provision()
    settings.influxdb().provision()


def up(settings: StackSettings) -> StackInfo:
    provision(settings)
    kafka, influx = settings.kafka(), settings.influxdb()
    kafka.start()
    if kafka.security:   # users, topics, ACLs (idempotent), then each principal's config
        kafka.security.apply(kafka.bootstrap, TOPICS, settings.worker_app_id)
    influx.start()
    if kafka.security:
        kafka.security.write_client_configs(kafka.bootstrap, {
            "url": influx.url, "org": settings.org, "bucket": settings.bucket,
            "token_file": str(influx.token_file)})
    info = status(settings)
    if not (info.kafka_up and info.influx_up):
        raise RuntimeError(f"stack did not come up: {asdict(info) | {'influx_token': '***'}}")
    return info


def down(settings: StackSettings) -> dict[str, bool]:
    """Stop what we started; report which services were running."""
    return {"kafka": settings.kafka().stop(), "influxdb": settings.influxdb().stop()}
