"""Single-node Apache Kafka 4.x in KRaft mode, run from the Maven Central jars."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

from latscope.procs import Service, port_open, run_step, wait_for
from latscope.stack.security import KafkaSecurity, write_private

POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>latscope</groupId><artifactId>kafka-runtime</artifactId><version>1</version>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>2.0.16</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId><version>2.24.3</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId><version>2.24.3</version></dependency>
  </dependencies>
</project>
"""

LOG4J2_YAML = """Configuration:
  Appenders:
    Console: {name: STDOUT, PatternLayout: {pattern: "[%d] %p %m (%c)%n"}}
  Loggers:
    Root: {level: WARN, AppenderRef: [{ref: STDOUT}]}
"""


class MissingTool(RuntimeError):
    pass


def require(tool: str, hint: str) -> str:
    path = shutil.which(tool)
    if path is None:
        raise MissingTool(f"`{tool}` not found: {hint}")
    return path


class LocalKafka:
    """The broker; with ``secure`` (or a run directory that already is) SASL/SCRAM over
    TLS with ACLs and no topic auto-creation (``stack/security.py``)."""

    def __init__(self, cache: Path, run_dir: Path, version: str, port: int,
                 controller_port: int, host: str = "127.0.0.1", secure: bool = False) -> None:
        self.home = cache / f"kafka-{version}"
        self.run_dir = run_dir
        self.data_dir = run_dir / "kafka-data"
        self.version = version
        self.host, self.port, self.controller_port = host, port, controller_port
        self.service = Service("kafka", run_dir, marker=str(run_dir / "server.properties"))
        sec = KafkaSecurity(run_dir, host)
        self.security = sec if secure or sec.exists() else None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def provisioned(self) -> bool:
        return (self.home / "libs" / f"kafka_2.13-{self.version}.jar").exists()

    def provision(self) -> None:
        """Fetch the broker's jars with Maven (cached; a re-run only checks)."""
        if self.provisioned():
            return
        require("java", "install a JRE 17+ (apt-get install openjdk-17-jre-headless)")
        mvn = require("mvn", "install Maven (apt-get install maven)")
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "pom.xml").write_text(POM.format(version=self.version))
        tmp = self.home / "libs.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        run_step([mvn, "-B", "dependency:copy-dependencies", f"-DoutputDirectory={tmp}",
                  "-DincludeScope=runtime"], f"downloading Kafka {self.version} jars (Maven Central)",
                 self.home / "mvn.log", cwd=self.home)
        shutil.rmtree(self.home / "libs", ignore_errors=True)
        tmp.rename(self.home / "libs")

    def _tool(self, *args: str) -> list[str]:
        return [require("java", "install a JRE 17+"), "-cp", str(self.home / "libs" / "*"), *args]

    @property
    def secure(self) -> bool:
        return self.security is not None

    def client_settings(self) -> dict[str, str]:
        """librdkafka settings of the stack's own admin client (none when plain)."""
        return self.security.admin_settings() if self.security else {}

    def _listeners(self) -> list[str]:
        if self.security:
            return self.security.server_properties(self.port, self.controller_port)
        return [
            f"listeners=PLAINTEXT://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        ]

    def _write_config(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        props = self.run_dir / "server.properties"
        text = "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{self.host}:{self.controller_port}",
            "controller.listener.names=CONTROLLER",
            *self._listeners(),
            f"log.dirs={self.data_dir}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "num.partitions=4",
            # Secure: no client may create a topic by naming it (the stack creates them).
            f"auto.create.topics.enable={'false' if self.security else 'true'}",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=24",
            "",
        ])
        if self.security:   # holds the admin's password
            write_private(props, text)
        else:
            props.write_text(text)
        (self.run_dir / "log4j2.yaml").write_text(LOG4J2_YAML)
        return props

    def _format(self, props: Path) -> None:
        """``kafka-storage format``; a secure one adds the admin's SCRAM credentials through
        an ``@argfile`` (0600, removed at once), never on the command line."""
        args = self._tool("kafka.tools.StorageTool", "format", "-t", uuid.uuid4().hex[:22],
                          "-c", str(props))
        argfile = None
        if self.security:
            argfile = self.security.format_argfile(args[1:])
            args = [args[0], f"@{argfile}"]
        try:
            proc = subprocess.run(args, capture_output=True, text=True)
        finally:
            if argfile is not None:
                argfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            out = proc.stdout + proc.stderr
            if self.security:
                out = out.replace(self.security.password("admin"), "***")
            raise RuntimeError(f"kafka storage format failed: {out}")

    def start(self, timeout: float = 90.0) -> None:
        formatted = (self.data_dir / "meta.properties").exists()
        if self.security:
            if formatted and not self.security.exists():
                raise RuntimeError(
                    f"{self.data_dir} holds a plain (unsecured) Kafka: a secure stack needs "
                    "its own run directory (--run-dir), or remove that one first")
            self.security.ensure_material()
        if self.up():
            return
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is taken by a process LatScope did not start")
        props = self._write_config()
        if not formatted:
            self._format(props)
        self.service.start([
            require("java", "install a JRE 17+"), "-Xms256m", "-Xmx1g",
            f"-Dlog4j2.configurationFile={self.run_dir / 'log4j2.yaml'}",
            "-cp", str(self.home / "libs" / "*"), "kafka.Kafka", str(props)])
        try:
            wait_for(self.up, timeout, "kafka", alive=self.service.running)
        except (RuntimeError, TimeoutError) as e:
            raise RuntimeError(f"{e}; last log lines:\n{self.service.log_tail()}") from None

    def up(self) -> bool:
        """The broker answers a metadata request (not merely an open port)."""
        if not port_open(self.host, self.port):
            return False
        from confluent_kafka.admin import AdminClient

        try:
            conf: dict[str, Any] = {"bootstrap.servers": self.bootstrap, **self.client_settings()}
            AdminClient(conf).list_topics(timeout=3)
        except Exception:
            return False
        return True

    def stop(self) -> bool:
        return self.service.stop()
