"""The embedded local stack (design §6): one Kafka broker and one InfluxDB, cached and run
under ``cache_dir()``. ``up`` is idempotent, ``down`` leaves no process behind, ``status``
asks the services themselves."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from latscope.paths import cache_dir
from latscope.stack.influxdb import LocalInfluxDB
from latscope.stack.kafka import LocalKafka

KAFKA_VERSION = "4.1.1"
INFLUXDB_VERSION = "v2.7.12"


@dataclass(frozen=True)
class StackSettings:
    cache: Path = field(default_factory=cache_dir)
    run_dir: Path | None = None  # service data and logs; default <cache>/run
    kafka_port: int = 9092
    kafka_controller_port: int | None = None  # default: kafka_port + 1
    influx_port: int = 8086
    org: str = "latscope"
    bucket: str = "latscope"
    kafka_version: str = KAFKA_VERSION
    influxdb_version: str = INFLUXDB_VERSION

    @classmethod
    def from_env(cls, **overrides: object) -> StackSettings:
        """Defaults, then LATSCOPE_* environment variables, then explicit overrides."""
        env = {
            "kafka_port": os.environ.get("LATSCOPE_KAFKA_PORT"),
            "influx_port": os.environ.get("LATSCOPE_INFLUX_PORT"),
            "run_dir": os.environ.get("LATSCOPE_RUN_DIR"),
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
                          self.kafka_controller_port or self.kafka_port + 1)

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

    def as_json(self) -> dict:
        """The contract of design §8 (secrets left out)."""
        return {
            "kafka": {"up": self.kafka_up, "bootstrap": self.kafka_bootstrap,
                      "managed": self.kafka_managed},
            "influxdb": {"up": self.influx_up, "url": self.influx_url, "org": self.influx_org,
                         "bucket": self.influx_bucket, "managed": self.influx_managed},
        }


def status(settings: StackSettings) -> StackInfo:
    kafka, influx = settings.kafka(), settings.influxdb()
    return StackInfo(
        kafka_up=kafka.up(), kafka_bootstrap=kafka.bootstrap, kafka_managed=kafka.service.running(),
        influx_up=influx.healthy() and influx.authorized(), influx_url=influx.url,
        influx_org=settings.org, influx_bucket=settings.bucket, influx_token=influx.token(),
        influx_managed=influx.service.running())


def provision(settings: StackSettings) -> None:
    """Fetch and build what is missing (cached: a no-op the second time)."""
    settings.kafka().provision()
    settings.influxdb().provision()


def up(settings: StackSettings) -> StackInfo:
    provision(settings)
    settings.kafka().start()
    settings.influxdb().start()
    info = status(settings)
    if not (info.kafka_up and info.influx_up):
        raise RuntimeError(f"stack did not come up: {asdict(info) | {'influx_token': '***'}}")
    return info


def down(settings: StackSettings) -> dict[str, bool]:
    """Stop what we started; report which services were running."""
    return {"kafka": settings.kafka().stop(), "influxdb": settings.influxdb().stop()}
