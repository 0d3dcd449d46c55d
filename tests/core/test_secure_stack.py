"""`latscope stack up --secure` on a private broker: SASL/SCRAM over TLS, ACLs per principal,
no topic auto-creation, and no password on a command line, in a log or in any output.

One private stack (its own run directory and free ports) serves the module; the suite's
shared stack on 9092/8086 is never touched. Every principal connects with the client config
the stack wrote for it, as a user would (``--config security/clients/NAME.yaml``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition
from needs import missing

from latscope import kafka
from latscope import settings as resolve
from latscope.bpf.clock import monotonic_ns
from latscope.paths import REPO_ROOT
from latscope.procs import free_port, free_port_pair
from latscope.producers.grouping import Hit, Record
from latscope.producers.publish import LayerEventPublisher
from latscope.schemas import codec
from latscope.schemas.records import (
    TOPIC_BREAKDOWNS,
    TOPIC_CLOCK,
    TOPIC_LAYER_EVENTS,
    TOPICS,
    flow_id,
)
from latscope.stack.security import ADMIN, PRINCIPALS, KafkaSecurity
from latscope.stack.services import StackSettings
from latscope.stream.kafkaio import consume, produce
from latscope.stream.process import WorkerProcess
from latscope.stream.synthetic import PathSpec, clock_model, encoded, sample_records
from latscope.sync.estimator import Model
from latscope.sync.publish import ClockPublisher

pytestmark = pytest.mark.stack

# Runs `latscope stack ...` in a Python that records the argv of every process it starts
# (audit hook on subprocess.Popen): `kafka-storage format`, the broker, influxd.
_AUDITED = """
import json, sys
log = open(sys.argv[1], "a")
def hook(event, args):
    if event == "subprocess.Popen":
        argv = args[1] if isinstance(args[1], (list, tuple)) else [args[1]]
        log.write(json.dumps([str(a) for a in argv]) + "\\n"); log.flush()
sys.addaudithook(hook)
from latscope.cli import main
sys.exit(main(sys.argv[2:]))
"""


@dataclass
class Secure:
    run_dir: Path
    kport: int
    iport: int
    up: subprocess.CompletedProcess
    argv_log: Path
    security: KafkaSecurity

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.kport}"

    def config(self, principal: str) -> Path:
        return self.security.client_config_file(principal)

    def ks(self, principal: str) -> kafka.KafkaSettings:
        """The principal's client settings, resolved from its config as every command does."""
        return resolve.kafka(resolve.config(self.config(principal)))

    def admin_ks(self) -> kafka.KafkaSettings:
        return kafka.KafkaSettings(self.bootstrap, self.security.admin_settings())

    def passwords(self) -> list[str]:
        return [self.security.password(u) for u in (ADMIN, *PRINCIPALS)]

    def stack(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-c", _AUDITED, str(self.argv_log), "stack", *args,
             "--run-dir", str(self.run_dir), "--kafka-port", str(self.kport),
             "--influx-port", str(self.iport)],
            capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secure]:
    settings = StackSettings.from_env()
    if not (settings.kafka().provisioned() and settings.influxdb().provisioned()):
        missing("Kafka jars / influxd not provisioned: run `make setup`")
    base = tmp_path_factory.mktemp("secure")
    run_dir = base / "run"
    s = Secure(run_dir, free_port_pair(), free_port_pair(), None,  # type: ignore[arg-type]
               base / "argv.jsonl", KafkaSecurity(run_dir))
    try:
        s.up = s.stack("up", "--secure", "--json")
        assert s.up.returncode == 0, s.up.stderr
        yield s
    finally:
        s.stack("down")


def _delivery_errors(ks: kafka.KafkaSettings, topic: str, **conf: object) -> list[KafkaError | None]:
    """Produce one message to ``topic``; the delivery report's error (None: delivered)."""
    out: list[KafkaError | None] = []
    p = kafka.producer(ks, **{"message.timeout.ms": 8000, **conf})
    p.produce(topic, b"v", key=b"k", on_delivery=lambda err, _m: out.append(err))
    p.flush(15)
    return out


def _answers(ks: kafka.KafkaSettings) -> bool:
    """The broker serves this client metadata."""
    try:
        kafka.admin(ks).list_topics(timeout=10)
    except KafkaException:
        return False
    return True


def _refused(ks: kafka.KafkaSettings, timeout: float = 10) -> list[KafkaError]:
    """The errors a client is refused with (its error callback), [] if none came, or if it
    got metadata after all."""
    errors: list[KafkaError] = []
    p = kafka.producer(kafka.KafkaSettings(ks.bootstrap, {**ks.settings,
                                                          "error_cb": errors.append}))
    deadline = time.monotonic() + timeout
    while not errors and time.monotonic() < deadline:
        p.poll(0.2)
    try:
        p.list_topics(timeout=2)
    except KafkaException:
        return errors
    return []


# ---- the stack ------------------------------------------------------------------------------

def test_up_makes_private_secrets_and_client_configs(secure: Secure) -> None:
    info = json.loads(secure.up.stdout)["kafka"]
    assert info["up"] and info["security"] == "SASL_SSL"
    assert set(info["client_configs"]) == set(PRINCIPALS)
    sec = secure.security
    assert sec.root.stat().st_mode & 0o777 == 0o700
    private = [sec.broker_pem, secure.run_dir / "server.properties",
               *sec.users.iterdir(), *sec.clients.iterdir()]
    assert len(private) == 2 + 5 + 4
    for f in private:
        assert f.stat().st_mode & 0o777 == 0o600, f
    assert not (sec.root / "format.args").exists()
    for p in PRINCIPALS:   # each config names its password file and holds no password
        text = sec.client_config_file(p).read_text()
        assert f"users/{p}.password" in text and not any(pw in text for pw in secure.passwords())
    # A run directory made secure stays secure: `up` and `status` without --secure.
    pid = (secure.run_dir / "kafka.pid").read_text()
    again = secure.stack("up", "--json")
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["kafka"]["security"] == "SASL_SSL"
    assert (secure.run_dir / "kafka.pid").read_text() == pid
    status = secure.stack("status", "--json")
    assert json.loads(status.stdout)["kafka"]["up"]


def test_topics_exist_as_defined_and_nothing_is_auto_created(secure: Secure) -> None:
    from confluent_kafka.admin import ConfigResource

    adm = kafka.admin(secure.admin_ks())
    meta = adm.list_topics(timeout=10)
    for name, (partitions, config) in TOPICS.items():
        assert len(meta.topics[name].partitions) == partitions, name
        res = ConfigResource(ConfigResource.Type.TOPIC, name)
        got = adm.describe_configs([res])[res].result(10)
        assert {k: got[k].value for k in config} == config, name
    # The super user, asking librdkafka to auto-create: only the broker's setting stops it.
    unknown = f"latscope.lsx-nope-{uuid.uuid4().hex[:8]}"
    errors = _delivery_errors(secure.admin_ks(), unknown, **{"allow.auto.create.topics": True,
                                                              "message.timeout.ms": 3000})
    assert errors and errors[0] is not None
    assert errors[0].code() in (KafkaError._MSG_TIMED_OUT, KafkaError.UNKNOWN_TOPIC_OR_PART)
    time.sleep(1)
    assert unknown not in adm.list_topics(timeout=10).topics


# ---- authentication -------------------------------------------------------------------------

def test_unauthenticated_and_wrong_password_are_refused(secure: Secure) -> None:
    good = secure.ks("reader")
    assert _answers(good)
    s = dict(good.settings)
    wrong_password = {**s, "sasl.password": "not-" + s["sasl.password"]}
    unknown_user = {**s, "sasl.username": "mallory"}
    tls_only = {k: v for k, v in s.items() if not k.startswith("sasl.")} | {
        "security.protocol": "SSL"}
    no_ca = {k: v for k, v in s.items() if k != "ssl.ca.location"}
    for name, settings in (("plaintext", {}), ("TLS without SASL", tls_only),
                           ("wrong password", wrong_password), ("unknown user", unknown_user),
                           ("untrusted certificate", no_ca)):
        errors = _refused(kafka.KafkaSettings(secure.bootstrap, settings))
        assert errors, f"{name}: the broker answered"
        if name in ("wrong password", "unknown user"):
            assert any(e.code() == KafkaError._AUTHENTICATION for e in errors), (name, errors)
        if name == "untrusted certificate":
            assert any(e.code() == KafkaError._SSL for e in errors), (name, errors)
        for e in errors:
            assert s["sasl.password"] not in str(e)


# ---- authorization --------------------------------------------------------------------------

def _records(n: int) -> list[Record]:
    flow = ("tcp", 4, "10.1.0.1", "10.2.0.2", 40000, 5201)
    t = monotonic_ns()
    return [Record("h1", flow, "tcp:10.1.0.1:40000>10.2.0.2:5201", i * 1000, False, True,
                   [Hit("sock_send", t + i, 0, None, 0, 0), Hit("dev_xmit", t + i + 5, 2, "eth0", 0, 0)])
            for i in range(n)]


def test_agent_writes_layer_events_and_nothing_else(secure: Secure) -> None:
    agent = secure.ks("agent")
    pub = LayerEventPublisher(agent)
    try:
        pub.publish_all(_records(50), None)
        assert pub.flush(30) == 0
        assert (pub.counters.delivered, pub.counters.failed) == (50, 0)
    finally:
        pub.close()
    got = consume(secure.ks("reader"), TOPIC_LAYER_EVENTS,
                  lambda m: sum(len(codec.decode_layer_events(x.value())) for x in m) >= 50, 30)
    assert sum(len(codec.decode_layer_events(m.value())) for m in got) >= 50
    for topic in (TOPIC_CLOCK, TOPIC_BREAKDOWNS):
        errors = _delivery_errors(agent, topic)
        assert errors and errors[0] is not None, topic
        assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (topic, errors)
    c = kafka.consumer(agent, **{"enable.auto.commit": False})    # nor read them
    read, errors = [], []
    try:
        c.assign([TopicPartition(TOPIC_LAYER_EVENTS, p, OFFSET_BEGINNING) for p in range(4)])
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and KafkaError.TOPIC_AUTHORIZATION_FAILED not in {
                e.code() for e in errors}:
            for m in c.consume(100, 0.5):
                (errors if m.error() else read).append(m.error() or m)
    finally:
        c.close()
    assert not read
    assert KafkaError.TOPIC_AUTHORIZATION_FAILED in {e.code() for e in errors}, errors


def test_only_sync_writes_the_clock(secure: Secure) -> None:
    pub = ClockPublisher(secure.ks("sync"), manager="mgr")
    pub.model("h1", Model(ref_ns=1, offset_ns=5000.0, drift_ppm=0.0, error_bound_ns=300.0,
                          samples=8, min_delay_ns=20_000.0, residual_ns=10.0,
                          negative_delays=0, negative_one_way=0))
    assert pub.flush(30) == 0 and (pub.delivered, pub.failed) == (1, 0)
    got = consume(secure.ks("reader"), TOPIC_CLOCK, lambda m: len(m) >= 1, 30)
    assert [codec.decode(m.value(), expect="ClockModel")[1]["host"] for m in got] == ["h1"]
    for principal in ("agent", "worker", "reader"):
        errors = _delivery_errors(secure.ks(principal), TOPIC_CLOCK)
        assert errors and errors[0] is not None, principal
        assert errors[0].code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, (principal, errors)


OFFSETS = {"h1": 5_000_000, "h2": -3_000_000, "c1": -3_000_000}
F1 = {"proto": "tcp", "family": 4, "src": "10.1.0.1", "dst": "10.2.0.2",
      "sport": 40123, "dport": 5201}


def test_faust_worker_over_sasl_ssl(secure: Secure, tmp_path: Path) -> None:
    """`latscope stream worker --config clients/worker.yaml`: Faust (aiokafka) reads the
    layer events and clock over SASL_SSL, keeps its tables in its own topics and group, and
    its breakdowns reach the reader."""
    w = WorkerProcess(["--config", str(secure.config("worker")),
                       "--topology", str(REPO_ROOT / "topologies" / "default.yaml"),
                       "--data-dir", str(tmp_path / "state"), "--interval", "1",
                       "--window", "1.5", "--lateness", "0.5"], free_port(), tmp_path / "w.log")
    with w:
        assert w.proc is not None
        cmdline = Path(f"/proc/{w.proc.pid}/cmdline").read_bytes().decode()
        w.wait_ready()
        models = [clock_model(h, OFFSETS[h], bound_ns=400) for h in ("h1", "h2")]
        produce(secure.ks("sync"), TOPIC_CLOCK, encoded("ClockModel", models, "host"))
        w.wait_until(lambda s: {"h1", "h2"} <= set(s["clock"]), 60, "clock models")
        spec = PathSpec(["h1", "h2", "c1"], step_ns=7_000, offsets_ns=OFFSETS, flow=F1)
        t0 = monotonic_ns()
        records = [r for i in range(30)
                   for r in sample_records(spec, seq=i * 72400, t0_ref_ns=t0 + i * 1_000_000)]
        produce(secure.ks("agent"), TOPIC_LAYER_EVENTS, encoded("LayerEvent", records, "flow_id"))

        def complete(msgs: list) -> list[dict]:   # (the agent test's records are incomplete)
            bds = [codec.decode(m.value(), expect="Breakdown")[1] for m in msgs]
            return [b for b in bds if b["complete"] and b["flow_id"] == flow_id(F1)]

        bds = complete(consume(secure.ks("reader"), TOPIC_BREAKDOWNS,
                               lambda m: len(complete(m)) >= 30, 60))
        assert len(bds) == 30
        assert all(s["duration_ns"] == 7_000 for b in bds for s in b["segments"])
        topics = kafka.admin(secure.admin_ks()).list_topics(timeout=10).topics
        assert any(t.startswith("latscope-stream-") for t in topics)   # its changelogs
    log = (tmp_path / "w.log").read_text(errors="replace")
    for pw in secure.passwords():
        assert pw not in cmdline and pw not in log


# ---- secrets stay out of command lines, logs and output --------------------------------------

def test_no_password_in_any_command_line_log_or_output(secure: Secure) -> None:
    passwords = secure.passwords()
    started = [json.loads(line) for line in secure.argv_log.read_text().splitlines()]
    assert any("kafka.tools.StorageTool" in " ".join(a) or a[-1].startswith("@")
               for a in started), "the audit hook saw no `kafka-storage format`"
    for argv in started:
        assert not any(pw in arg for pw in passwords for arg in argv), argv[:3]
    for pid_dir in Path("/proc").iterdir():   # everything running on the machine now
        if pid_dir.name.isdigit():
            try:
                cmdline = (pid_dir / "cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            assert not any(pw in cmdline for pw in passwords), pid_dir.name
    outputs = [secure.up.stdout, secure.up.stderr]
    logs = list(secure.run_dir.glob("*.log"))
    assert {f.name for f in logs} >= {"kafka.log", "influxd.log"}
    for text in outputs + [f.read_text(errors="replace") for f in logs]:
        assert not any(pw in text for pw in passwords)
    assert os.stat(secure.run_dir / "server.properties").st_mode & 0o077 == 0


def test_secure_refuses_a_run_dir_holding_a_plain_kafka(tmp_path: Path) -> None:
    """The shared stack's run directory (formatted plain) is never turned secure, nor
    touched: the check comes before anything is written or started."""
    run_dir = tmp_path / "run"
    (run_dir / "kafka-data").mkdir(parents=True)
    (run_dir / "kafka-data" / "meta.properties").write_text("node.id=1\n")
    k = StackSettings(run_dir=run_dir, kafka_port=free_port_pair(), secure=True).kafka()
    with pytest.raises(RuntimeError, match="holds a plain"):
        k.start()
    assert sorted(p.name for p in run_dir.iterdir()) == ["kafka-data"]
