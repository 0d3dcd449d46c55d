"""Single-node Apache Kafka 4.x in KRaft mode, run from the Maven Central jars."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path

from latscope.procs import Service, port_open, run_step, wait_for

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
    def __init__(self, cache: Path, run_dir: Path, version: str, port: int,
                 controller_port: int, host: str = "127.0.0.1") -> None:
        self.home = cache / f"kafka-{version}"
        self.run_dir = run_dir
        self.data_dir = run_dir / "kafka-data"
        self.version = version
        self.host, self.port, self.controller_port = host, port, controller_port
        self.service = Service("kafka", run_dir, marker=str(run_dir / "server.properties"))

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

    def _write_config(self) -> Path:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        props = self.run_dir / "server.properties"
        props.write_text("\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@{self.host}:{self.controller_port}",
            f"listeners=PLAINTEXT://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            f"advertised.listeners=PLAINTEXT://{self.host}:{self.port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            f"log.dirs={self.data_dir}",
            "offsets.topic.replication.factor=1",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "num.partitions=4",
            "auto.create.topics.enable=true",
            "group.initial.rebalance.delay.ms=0",
            "log.retention.hours=24",
            "",
        ]))
        (self.run_dir / "log4j2.yaml").write_text(LOG4J2_YAML)
        return props

    def start(self, timeout: float = 90.0) -> None:
        if self.up():
            return
        if port_open(self.host, self.port):
            raise RuntimeError(f"port {self.port} is taken by a process LatScope did not start")
        props = self._write_config()
        if not (self.data_dir / "meta.properties").exists():
            cluster_id = uuid.uuid4().hex[:22]
            proc = subprocess.run(
                self._tool("kafka.tools.StorageTool", "format", "-t", cluster_id,
                           "-c", str(props)), capture_output=True, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"kafka storage format failed: {proc.stdout}{proc.stderr}")
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
            AdminClient({"bootstrap.servers": self.bootstrap}).list_topics(timeout=3)
        except Exception:
            return False
        return True

    def stop(self) -> bool:
        return self.service.stop()
