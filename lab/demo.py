"""The whole pipeline on one machine (design §7): namespaces, agents, sync, stream, sinks.

``run_demo(DemoOptions(...))`` builds the topology as network namespaces, starts the local
stack if it is down, starts one stream worker (a child process), the clock sync (manager
and XDP responders), one agent per host on a flow's path (each with its host's injected
clock), drives the topology's flows, waits until every sample is joined and every window
closed, and returns the summary of design §8. Everything it started is stopped and torn
down on the way out, Ctrl-C included. ``pipeline(opts)`` is the same without the flows,
for tests that drive their own traffic (external tools such as sockperf). A component
that is not available (e.g. BPF objects not built) is reported under ``missing`` instead
of being faked.
"""

from __future__ import annotations

import contextlib
import math
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from latscope import kafka, log
from latscope.paths import REPO_ROOT, cache_dir
from latscope.schemas.records import (
    TOPIC_BREAKDOWNS,
    TOPIC_CLOCK,
    TOPIC_CLOCK_SAMPLES,
    TOPIC_DEAD_LETTER,
    TOPIC_FLOW_STATS,
    TOPIC_LAYER_EVENTS,
)

_log = log.get("demo")
DEFAULT_TOPOLOGY = REPO_ROOT / "topologies" / "default.yaml"


@dataclass
class DemoOptions:
    topology: Path = DEFAULT_TOPOLOGY
    duration_s: float = 20.0
    prefix: str = "lsd"                  # namespace/link prefix
    topic_prefix: str | None = None      # None: the standard latscope.* topics
    web_port: int = 6066
    interval_s: float = 1.0              # statistics window
    sync_interval_s: float = 0.5
    sync_warmup_s: float = 30.0
    sync_bound_ns: float = 20_000.0      # wait for models this good before the traffic
    start_stack: bool = True
    # The Kafka and InfluxDB to run against (a StackSettings); None: the local stack that
    # LATSCOPE_* environment variables name. The fault tests point it at a private stack.
    stack: Any = None
    # The hosts that get an in-process agent; None: every host on a flow's path. A test that
    # runs (and kills) a host's agent as a process of its own leaves that host out.
    agent_hosts: list[str] | None = None
    settle_timeout_s: float = 60.0
    # Extra sysctls per host namespace, e.g. {"h1": {"net.ipv4.tcp_autocorking": "0"}}.
    sysctls: dict[str, dict[str, str]] = field(default_factory=dict)
    # Entered with the built Net right before the flows start, left when they are done:
    # lets a test read the kernel (tc, ss) while the traffic runs, at the same time as it.
    monitor: Callable[[Any], contextlib.AbstractContextManager[Any]] | None = None
    # False: the worker is told only the manager's name, as a worker wired by hand to
    # real hosts; it learns every flow's path from the records (stream/flows.py)
    worker_topology: bool = True
    run_id: str = field(default_factory=lambda: f"demo-{uuid.uuid4().hex[:8]}")
    report_dir: Path | None = None       # write `latscope report` of this run here at the end
    progress: Callable[[str], None] = lambda msg: _log.info("%s", msg)
    # A latscope.yaml / conf directory whose kafka (and influxdb) every component uses;
    # None: the local stack's (each part as its own principal when the stack is secure).
    config: Path | None = None

    def topic(self, standard: str) -> str:
        if self.topic_prefix is None:
            return standard
        return f"{self.topic_prefix}.{standard.removeprefix('latscope.')}"


@dataclass(frozen=True)
class DemoKafka:
    """Each component's Kafka client settings, resolved from a config as every command's
    are, and how the worker process is given them."""

    agent: kafka.KafkaSettings
    sync: kafka.KafkaSettings
    worker: kafka.KafkaSettings
    worker_args: tuple[str, ...]


def demo_kafka(bootstrap: str, client_configs: dict[str, str], config: Path | None) -> DemoKafka:
    """``config`` for every component; else a secure local stack's client config per
    principal (agent, sync, worker: the ACLs allow each only its own part); else the plain
    local stack at ``bootstrap``."""
    from latscope import settings

    if config is not None:
        ks = settings.kafka(settings.config(config))
        return DemoKafka(ks, ks, ks, ("--config", str(config)))
    if client_configs:
        by = {p: settings.kafka(settings.config(client_configs[p]))
              for p in ("agent", "sync", "worker")}
        return DemoKafka(by["agent"], by["sync"], by["worker"],
                         ("--config", client_configs["worker"]))
    ks = kafka.KafkaSettings(bootstrap)
    return DemoKafka(ks, ks, ks, ("--bootstrap", bootstrap))


@dataclass
class _Agents:
    """One in-process agent per host, each on its own thread."""

    agents: dict[str, Any] = field(default_factory=dict)
    threads: list[threading.Thread] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    crashed: dict[str, str] = field(default_factory=dict)

    def start(self, host: str, agent: Any) -> None:
        def body() -> None:
            try:
                agent.run(self.stop)
            except Exception as e:   # reported in the summary, never silent
                _log.exception("agent %s crashed", host)
                self.crashed[host] = f"crashed: {type(e).__name__}: {e}"[:300]

        self.agents[host] = agent
        th = threading.Thread(target=body, name=f"agent-{host}", daemon=True)
        th.start()
        self.threads.append(th)

    def status(self) -> dict[str, dict]:
        return {h: a.status() for h, a in self.agents.items()}

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)
        for a in self.agents.values():
            if not any(t.is_alive() for t in self.threads):
                with contextlib.suppress(Exception):
                    a.shutdown()   # no-op after run() finished; detaches if run never started


def _us(v: float | None) -> float | None:
    return None if v is None else round(v, 1)


def _segment_hosts(name: str) -> list[str]:
    a, b = name.split("→")
    ha, hb = a.split(":")[0], b.split(":")[0]
    return [ha] if ha == hb else [ha, hb]


def build_summary(topology: Any, duration_s: float, flows_view: dict, worker_summary: dict,
                  agents: dict[str, dict], clock: dict, missing: dict[str, str]) -> dict:
    """The §8 summary from the worker's views, the agents' and the sync's own counters."""
    c = worker_summary.get("counters", {})
    published = sum(a["counters"].get("published", 0) for a in agents.values())
    consumed = c.get("records", 0)
    counters = {
        "sampled": sum(a["counters"].get("samples", 0) for a in agents.values()),
        "published": published,
        "joined": c.get("join_joined", 0),
        "complete": c.get("complete", 0),
        "incomplete": c.get("incomplete", 0),
        # published by an agent but never joined: not consumed, or late for its sample
        "lost": max(0, published - consumed) + c.get("join_late", 0),
        "dead_lettered": c.get("dead_lettered", 0),
        "late_for_statistics": c.get("window_late", 0),
        "agent_ringbuf_drops": sum(a["counters"].get("ringbuf_drops", 0) for a in agents.values()),
        "agent_rate_capped": sum(a["counters"].get("rate_capped", 0) for a in agents.values()),
        "influx_lines_failed": c.get("influx_lines_failed", 0),
    }
    by_name = {f["flow"]: f for f in flows_view.get("flows", [])}
    flows = []
    for f in topology.flows:
        view = by_name.get(f.name, {})
        e2e = view.get("end_to_end", {}).get("total", {})
        segs = []
        for s in view.get("segments", []):
            tot = s.get("total")
            if not tot:
                continue
            frm, to = s["segment"].split("→")
            segs.append({"from": frm, "to": to, "layer": s["layer"],
                         "hosts": _segment_hosts(s["segment"]), "device": s["device"],
                         "count": tot["count"], "p50_us": _us(tot["p50_us"]),
                         "p99_us": _us(tot["p99_us"]), "mean_us": _us(tot["mean_us"])})
        flows.append({"name": f.name, "src": f.src, "dst": f.dst, "proto": f.proto,
                      "family": f.family, "samples": e2e.get("count", 0),
                      "end_to_end_us": {"p50": _us(e2e.get("p50_us")),
                                        "p99": _us(e2e.get("p99_us")),
                                        "mean": _us(e2e.get("mean_us"))},
                      "segments": segs})
    out = {"duration_s": duration_s, "counters": counters, "clock": clock, "flows": flows}
    if missing:
        out["missing"] = missing
    return out


@dataclass
class Pipeline:
    """A running pipeline on a built topology: what ``pipeline()`` yields. The caller drives
    its own traffic inside the namespaces (``net.popen``), then calls ``finish()``."""

    opts: DemoOptions
    topology: Any
    net: Any
    kafka: DemoKafka
    worker: Any
    sync: Any
    agents: _Agents
    missing: dict[str, str]
    unsynced: list[str]          # hosts whose clock model never got within opts.sync_bound_ns

    def finish(self, elapsed_s: float, traffic: list | None = None) -> dict:
        """Detach the agents (flushing their last records), wait until the worker joined
        everything and closed every window, and return the §8 summary."""
        t = self.opts.topic
        self.agents.close()
        self.missing.update({f"agent {h}": why for h, why in self.agents.crashed.items()})
        status = self.agents.status()
        published = sum(a["counters"].get("published", 0) for a in status.values())
        _settle(self.worker, published, self.opts.settle_timeout_s)
        summary = build_summary(self.topology, round(elapsed_s, 1), self.worker.flows(),
                                self.worker.summary(), status,
                                self.sync.summary() if self.sync else {}, self.missing)
        summary["counters"]["sync_unconverged"] = len(self.unsynced)
        summary["run"] = self.opts.run_id
        summary["topics"] = {"layer_events": t(TOPIC_LAYER_EVENTS), "clock": t(TOPIC_CLOCK),
                             "breakdowns": t(TOPIC_BREAKDOWNS),
                             "dead_letter": t(TOPIC_DEAD_LETTER),
                             "flow_stats": t(TOPIC_FLOW_STATS)}
        # The injected truth, so anyone can check the corrected figures against it.
        summary["injected_clocks"] = {
            h.name: {"offset_ns": self.net.clock(h.name).offset_ns,
                     "drift_ppm": self.net.clock(h.name).drift_ppm,
                     "epoch_ns": self.net.epoch_ns} for h in self.topology.hosts}
        summary["worker"] = {"counters": self.worker.summary()["counters"]}
        summary["traffic"] = traffic or []
        return summary


def ensure_stack(settings: Any, start: bool, say: Callable[[str], None]) -> Any:
    """The local stack's StackInfo, started first if it is down and ``start`` allows."""
    from latscope.stack import services as stack

    info = stack.status(settings)
    if not (info.kafka_up and info.influx_up):
        if not start:
            raise RuntimeError("the local stack is not running (latscope stack up)")
        say("starting the local stack (Kafka, InfluxDB)…")
        info = stack.up(settings)
    return info


@contextlib.contextmanager
def pipeline(opts: DemoOptions) -> Iterator[Pipeline]:
    """Build the topology, start the worker, the sync (waiting for good clock models) and
    one agent per host on a flow's path; tear all of it down on exit, failures included.
    The demo drives the topology's flows with it; external-tool tests drive their own."""
    from latscope.lab import netns
    from latscope.lab.topology import load_topology
    from latscope.stack import services as stack
    from latscope.stream.process import WorkerProcess

    say = opts.progress
    topo = load_topology(opts.topology)
    settings = opts.stack or stack.StackSettings.from_env()
    info = ensure_stack(settings, opts.start_stack, say)
    ks = demo_kafka(info.kafka_bootstrap, info.client_configs, opts.config)
    # The worker's app id under the prefix a secure stack's ACLs give the worker principal.
    app_id = f"latscope-stream-{opts.run_id}"
    missing: dict[str, str] = {}
    run_dir = cache_dir() / "demo" / opts.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    t = opts.topic
    with contextlib.ExitStack() as es:
        say(f"building {len(topo.hosts)} namespaces ({opts.prefix}-*) from {opts.topology}…")
        net = es.enter_context(netns.build(topo, prefix=opts.prefix))
        net.wait_all_reachable()
        for host, values in opts.sysctls.items():
            for key, value in values.items():
                subprocess.run(["ip", "netns", "exec", net.ns_name(host), "sysctl", "-qw",
                                f"{key}={value}"], check=True)

        say("starting the stream worker…")
        worker = WorkerProcess(
            [*ks.worker_args, "--app-id", app_id,
             "--data-dir", str(run_dir / "stream"),
             *(["--topology", str(opts.topology)] if opts.worker_topology
               else ["--manager", topo.manager.name,
                     "--filter-retrans", str(int(bool(topo.sampling.filter_retrans)))]),
             "--interval", str(opts.interval_s), "--latest", "--influx-tag", f"run={opts.run_id}",
             "--layer-topic", t(TOPIC_LAYER_EVENTS), "--clock-topic", t(TOPIC_CLOCK),
             "--breakdown-topic", t(TOPIC_BREAKDOWNS),
             "--dead-letter-topic", t(TOPIC_DEAD_LETTER),
             "--flow-stats-topic", t(TOPIC_FLOW_STATS)],
            opts.web_port, run_dir / "worker.log", env=_stack_env(settings))
        # LIFO: the worker stops first, then its per-run internal topics go.
        es.callback(_delete_internal_topics, ks.worker, f"{app_id}-")
        es.callback(worker.stop)
        worker.start()
        worker.wait_ready()

        sync, unsynced = _start_sync(net, ks.sync, topo.manager.name, opts, missing, say)
        if sync is not None:
            es.callback(sync.close)
        agents = _start_agents(net, topo, ks.agent, t(TOPIC_LAYER_EVENTS), t(TOPIC_FLOW_STATS),
                               missing, say, opts.agent_hosts)
        es.callback(agents.close)
        yield Pipeline(opts, topo, net, ks, worker, sync, agents, missing, unsynced)


def run_demo(opts: DemoOptions) -> dict:
    from latscope.lab import traffic

    began = datetime.now().astimezone()
    with pipeline(opts) as p:
        flows = p.topology.flows
        opts.progress(f"running {len(flows)} flow(s) for up to {opts.duration_s:.0f} s…")
        with opts.monitor(p.net) if opts.monitor else contextlib.nullcontext():
            started = time.monotonic()
            runs = traffic.start_flows(p.net, duration_s=opts.duration_s)
            results = []
            for run in runs:
                left = max(1.0, opts.duration_s + 30 - (time.monotonic() - started))
                try:
                    results.append(run.wait(left))
                except Exception as e:   # a flow that failed is reported, the rest still counts
                    p.missing[f"flow {run.flow.name}"] = str(e)[:300]
                    run.stop()
            elapsed = time.monotonic() - started
        opts.progress("flows done; waiting for the last samples to be joined and windows "
                      "closed…")
        summary = p.finish(elapsed, results)
    if opts.report_dir is not None:   # the worker has stopped: InfluxDB has every point
        summary["report"] = write_run_report(opts, began, [f.name for f in p.topology.flows],
                                             summary.setdefault("missing", {}))
        if not summary["missing"]:
            del summary["missing"]
    return summary


def write_run_report(opts: DemoOptions, began: datetime, flows: list[str],
                     missing: dict[str, str]) -> str | None:
    """``latscope report`` of this run only (its run tag, its flows, its time): the index's
    path, or None with the reason under ``missing``."""
    from latscope.sinks.report import ReportError, make_report
    from latscope.sinks.settings import InfluxSettings
    from latscope.sinks.timerange import TimeRange
    from latscope.stack import services as stack

    assert opts.report_dir is not None
    opts.progress(f"writing the report of run {opts.run_id} to {opts.report_dir}…")
    info = stack.status(stack.StackSettings.from_env())
    settings = InfluxSettings(info.influx_url, info.influx_org, info.influx_bucket,
                              info.influx_token or "")
    try:
        rep = make_report(settings, opts.report_dir,
                          TimeRange(began, datetime.now().astimezone()), opts.run_id, flows,
                          progress=opts.progress)
    except (ReportError, OSError) as e:
        missing["report"] = str(e)[:300]
        return None
    opts.progress(f"report: open {rep.index}")
    return str(rep.index)


def _stack_env(settings: Any) -> dict[str, str]:
    """What makes a child process's ``StackSettings.from_env()`` find this stack (the
    worker finds its InfluxDB and token that way)."""
    return {"LATSCOPE_KAFKA_PORT": str(settings.kafka_port),
            "LATSCOPE_INFLUX_PORT": str(settings.influx_port),
            "LATSCOPE_RUN_DIR": str(settings.runs)}


def _delete_internal_topics(ks: kafka.KafkaSettings, prefix: str) -> None:
    """The run's Faust changelog/assignor topics: state of a worker that is gone."""
    try:
        kafka.delete_topics_with_prefix(ks, prefix)
    except Exception as e:   # leftovers are harmless: say so, do not fail the run
        _log.warning("could not delete the run's internal topics %s*: %s", prefix, e)


def _start_sync(net: Any, ks: kafka.KafkaSettings, manager: str, opts: DemoOptions,
                missing: dict[str, str], say: Callable[[str], None]) -> tuple[Any, list[str]]:
    """Start the topology's clock sync and wait for it to converge; returns the sync (None
    when not available) and the hosts whose model did not converge. A run whose clocks never
    converged fails: its cross-host segments would carry errors no tolerance caps."""
    try:
        from latscope.lab.sync_run import TopologySync
        from latscope.sync.publish import ClockPublisher
    except Exception as e:   # not built yet, or broken: reported, never faked
        missing["sync"] = f"not available: {type(e).__name__}: {e}"
        return None, sorted(net.topology.sync_targets())
    say("starting clock sync (XDP responders, manager)…")
    pub = ClockPublisher(ks, manager=manager, models_topic=opts.topic(TOPIC_CLOCK),
                         samples_topic=opts.topic(TOPIC_CLOCK_SAMPLES))
    sync = TopologySync(net, interval_s=opts.sync_interval_s, on_sample=pub.sample,
                        on_model=pub.model).start()
    # The first fits rest on a few exchanges (drift poorly known): wait until every host's
    # model claims a bound below opts.sync_bound_ns before any traffic is measured.
    deadline = time.monotonic() + opts.sync_warmup_s

    def unconverged() -> dict[str, float | None]:
        """Host -> its model's bound (None: no model) for the hosts not yet converged."""
        return {h: st.get("bound_ns") for h, st in sync.summary().items()
                if (st.get("bound_ns") or math.inf) > opts.sync_bound_ns}

    while (left := unconverged()) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        detail = ", ".join(f"{h} " + ("no model" if b is None else f"bound {b / 1000:.1f} µs")
                           for h, b in sorted(left.items()))
        missing["sync"] = (f"clock models did not converge within {opts.sync_warmup_s:.0f} s "
                           f"(every host needs a bound <= {opts.sync_bound_ns / 1000:g} µs "
                           f"before the traffic): {detail}; this run's cross-host segments "
                           "are not trustworthy")
        say(f"clock sync FAILED: {missing['sync']}")
    pub.flush(10)
    return sync, sorted(left)


def _start_agents(net: Any, topo: Any, ks: kafka.KafkaSettings, topic: str,
                  flow_stats_topic: str, missing: dict[str, str], say: Callable[[str], None],
                  only: list[str] | None = None) -> _Agents:
    out = _Agents()
    try:
        from latscope.producers.agent import Agent, AgentSettings
    except Exception as e:   # not built yet, or broken: reported, never faked
        missing["agents"] = f"not available: {type(e).__name__}: {e}"
        return out
    hosts = sorted({h for f in topo.flows for h in topo.path_hosts(f)
                    if only is None or h in only})
    say(f"starting agents on {', '.join(hosts)}…")
    for h in hosts:
        s = AgentSettings(host=h, netns=[net.ns_name(h)], clock=net.clock(h),
                          sample_size=topo.sampling.size, ports=list(topo.sampling.ports),
                          filter_retrans=bool(topo.sampling.filter_retrans),
                          kafka=ks, topic=topic, flow_stats_topic=flow_stats_topic)
        agent = Agent(s)
        try:
            agent.start()
        except Exception as e:
            missing[f"agent {h}"] = f"could not start: {e}"[:300]
            with contextlib.suppress(Exception):
                agent.shutdown()
            continue
        out.start(h, agent)
    return out


def _settle(worker: Any, published: int, timeout: float) -> None:
    """Wait until the worker consumed what the agents published, joined it and closed
    every window (so the summary's statistics are final)."""
    def done(s: dict) -> bool:
        c = s["counters"]
        return (c["records"] + c["dead_lettered"] >= published and c["pending"] == 0
                and c["open_windows"] == 0)

    try:
        worker.wait_until(done, timeout, "settled statistics")
    except TimeoutError as e:
        _log.warning("%s", str(e).splitlines()[0])


def format_table(summary: dict) -> str:
    """A readable per-flow breakdown (µs) for the terminal."""
    lines = []
    for f in summary["flows"]:
        e = f["end_to_end_us"]
        lines.append(f"\n{f['name']}: {f['src']} → {f['dst']} ({f['proto']}/IPv{f['family']}), "
                     f"{f['samples']} samples, end-to-end p50 {e['p50']} µs, p99 {e['p99']} µs")
        lines.append(f"  {'segment':<46} {'layer':<8} {'count':>6} {'p50 µs':>10} "
                     f"{'p99 µs':>10} {'mean µs':>10}")
        for s in f["segments"]:
            name = f"{s['from']} → {s['to']}"
            lines.append(f"  {name:<46} {s['layer']:<8} {s['count']:>6} {s['p50_us']!s:>10} "
                         f"{s['p99_us']!s:>10} {s['mean_us']!s:>10}")
    c = summary["counters"]
    lines.append("\ncounters: " + ", ".join(f"{k} {v}" for k, v in c.items()))
    for h, ck in summary["clock"].items():
        lines.append(f"clock {h}: injected {ck.get('injected_offset_ns')} ns, estimated "
                     f"{ck.get('estimated_offset_ns')} ns, error {ck.get('error_ns')} ns "
                     f"(bound {ck.get('bound_ns')} ns)")
    for k, v in summary.get("missing", {}).items():
        lines.append(f"MISSING {k}: {v}")
    return "\n".join(lines)
