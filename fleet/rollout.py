"""``fleet up | status | down | logs`` over every server of a conf directory: a bounded pool
of SSH workers, one outcome per server (a failing server never stops the others), and the
management server's own services (sync manager, stream worker) under the same supervisor.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from latscope import log, paths, settings
from latscope.config import Config, Server
from latscope.errors import UserError
from latscope.fleet import host
from latscope.fleet.bundle import gather
from latscope.fleet.local import LocalMachine
from latscope.fleet.plan import central_services, deployed, host_plan
from latscope.fleet.ssh import HostError, Remote, connect
from latscope.kafka import group_lag
from latscope.sync.keys import create_key_file

_log = log.get("fleet")
READY_TIMEOUT_S = 180
READY_UP_S = 5
RATE_WINDOW_S = 2.0     # status's joined samples/s: the worker's counters this far apart
CENTRAL = "management"


@dataclass
class Outcome:
    host: str
    ok: bool
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"host": self.host, "ok": self.ok, "reason": self.reason, **self.detail}


class Progress:
    """One line per step per host on stderr (the terminal or a log), stdout kept for --json."""

    def __init__(self, total: int) -> None:
        self.total, self.done, self.lock = total, 0, threading.Lock()

    def step(self, hostname: str, what: str) -> None:
        with self.lock:
            print(f"[{self.done}/{self.total}] {hostname}: {what}", file=sys.stderr, flush=True)

    def finished(self, outcome: Outcome) -> None:
        with self.lock:
            self.done += 1
            state = "ok" if outcome.ok else f"FAILED: {outcome.reason}"
            print(f"[{self.done}/{self.total}] {outcome.host}: {state}", file=sys.stderr,
                  flush=True)


@dataclass
class Fleet:
    config: Config
    conf_dir: Path
    accept_new: bool = False

    @property
    def state(self) -> Path:
        f = self.config.fleet
        return Path(f.state_dir).expanduser() if f.state_dir else paths.cache_dir() / "fleet"

    def servers(self, names: list[str] | None = None) -> list[Server]:
        servers = deployed(self.config)
        if names:
            known = {s.hostname for s in servers}
            if bad := [n for n in names if n not in known]:
                raise UserError(f"--host {', '.join(bad)}: not a server in connect_info "
                                f"(known: {', '.join(sorted(known))})")
            servers = [s for s in servers if s.hostname in names]
        return servers

    def each(self, servers: list[Server], fn: Callable[[Remote, Progress], dict[str, Any]],
             ) -> list[Outcome]:
        """``fn`` on every server in a bounded pool; an error is that server's outcome."""
        progress = Progress(len(servers))

        def one(s: Server) -> Outcome:
            try:
                progress.step(s.hostname, "connecting")
                r = connect(s, self.config.fleet, self.accept_new)
                try:
                    out = Outcome(s.hostname, True, detail=fn(r, progress))
                finally:
                    r.close()
            except HostError as e:
                out = Outcome(s.hostname, False, str(e))
            except Exception as e:   # one server's surprise is its outcome, not the fleet's
                _log.debug("%s", s.hostname, exc_info=True)
                out = Outcome(s.hostname, False, f"{type(e).__name__}: {e}")
            progress.finished(out)
            return out

        with ThreadPoolExecutor(max_workers=self.config.fleet.parallel) as pool:
            return list(pool.map(one, servers))

    # ---- up -----------------------------------------------------------------------------

    def sync_key(self) -> bytes:
        key = self.state / "sync.key"
        create_key_file(key)
        return key.read_bytes()

    def up(self, names: list[str] | None, wheel: Path | None) -> list[Outcome]:
        servers = self.servers(names)
        self.state.mkdir(parents=True, exist_ok=True, mode=0o700)
        key = self.sync_key()
        bundle = gather(self.state, wheel)

        def deploy(r: Remote, progress: Progress) -> dict[str, Any]:
            plan = host_plan(self.config, r.server, key, bundle.digest)
            say = lambda what: progress.step(r.server.hostname, what)  # noqa: E731
            installed = host.install(r, plan, bundle, say)
            files = {"latscope.yaml": (plan.config_yaml.encode(), 0o600),
                     **{n: (v, 0o600) for n, v in plan.secrets.items()}}
            say("configuring")
            restarted = host.configure(r, plan.dir, files, plan.services)
            say("waiting for the agent and the responder")
            wait_ready(r, plan.dir, plan.services, restarted)
            return {"installed": installed, "started": restarted, "bundle": bundle.digest}

        outcomes = self.each(servers, deploy)
        if any(o.ok for o in outcomes):    # nothing to synchronise or join otherwise
            outcomes.append(self.up_central())
        return outcomes

    def up_central(self) -> Outcome:
        services = central_services(self.config, self.conf_dir, self.state)
        try:
            started = host.configure(LocalMachine(), str(self.state / CENTRAL), {}, services)
            wait_ready(LocalMachine(), str(self.state / CENTRAL), services, started)
            deadline = time.monotonic() + READY_TIMEOUT_S
            while True:
                try:
                    self._summary()
                    break
                except (OSError, ValueError) as e:
                    if time.monotonic() > deadline:
                        raise HostError(f"the stream worker's web view never answered: {e}") \
                            from None
                time.sleep(1)
        except HostError as e:
            return Outcome(CENTRAL, False, str(e))
        return Outcome(CENTRAL, True, detail={"started": started})

    # ---- status, down, logs ---------------------------------------------------------------

    def status(self, names: list[str] | None) -> list[Outcome]:
        outcomes = self.each(self.servers(names),
                             lambda r, _p: host.status(r, self.config.fleet.host_dir(
                                 r.server.hostname)))
        outcomes.append(Outcome(CENTRAL, True, detail=self.central_status()))
        return outcomes

    def central_status(self) -> dict[str, Any]:
        pid, services = host.services_status(LocalMachine(), str(self.state / CENTRAL))
        out: dict[str, Any] = {"supervisor_pid": pid, "services": services}
        try:
            summ, then = self._summary(), time.monotonic()
            time.sleep(RATE_WINDOW_S)
            now_summ = self._summary()
        except (OSError, ValueError) as e:
            out["worker"] = {"error": f"no answer on port {self.config.fleet.worker_web_port}: "
                                      f"{e}"}
            return out
        c, c0 = now_summ.get("counters", {}), summ.get("counters", {})
        out["worker"] = {
            "uptime_s": now_summ.get("uptime_s"), "complete": c.get("complete"),
            "incomplete": c.get("incomplete"), "dead_lettered": c.get("dead_lettered"),
            "complete_per_s": round((c.get("complete", 0) - c0.get("complete", 0)) /
                                    (time.monotonic() - then), 1),
            "lag": self._lag(now_summ)}
        out["clock"] = now_summ.get("clock", {})
        return out

    def _summary(self) -> dict[str, Any]:
        port = self.config.fleet.worker_web_port
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/latscope/summary", timeout=3) as f:
            return json.load(f)

    def _lag(self, summ: dict[str, Any]) -> dict[str, int] | str:
        """Per input topic, what the worker's group has not committed yet, per the broker."""
        try:
            return group_lag(settings.kafka(self.config), summ["app_id"], summ["inputs"])
        except Exception as e:     # a broker that does not answer is a status, not a crash
            return f"unknown: {e}"

    def down(self, names: list[str] | None) -> list[Outcome]:
        outcomes = []
        if not names:
            try:
                r = host.stop(LocalMachine(), str(self.state / CENTRAL))
                outcomes.append(Outcome(CENTRAL, not r["left"],
                                        "left: " + "; ".join(r["left"]) if r["left"] else None, r))
            except HostError as e:
                outcomes.append(Outcome(CENTRAL, False, str(e)))

        def stop(r: Remote, _p: Progress) -> dict[str, Any]:
            res = host.stop(r, self.config.fleet.host_dir(r.server.hostname))
            if res["left"]:
                raise HostError("still attached after stop: " + "; ".join(res["left"]))
            return res

        return self.each(self.servers(names), stop) + outcomes

    def logs(self, name: str, service: str, lines: int) -> str:
        if name == CENTRAL:
            return host.log_tail(LocalMachine(), str(self.state / CENTRAL), service, lines)
        (server,) = self.servers([name])
        r = connect(server, self.config.fleet, self.accept_new)
        try:
            return host.log_tail(r, self.config.fleet.host_dir(name), service, lines)
        finally:
            r.close()


def wait_ready(r: Any, d: str, services: dict[str, dict], started: list[str]) -> None:
    """Every service running its current entry (the supervisor reports each one's digest);
    those just started must stay up a few seconds without exiting (an agent whose probes the
    kernel refuses exits at once)."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        pid, st = host.services_status(r, d)
        # Only the current entry counts: until the supervisor applies it, its status is the
        # old service's (a restart count from before).
        now = {n: st[n] for n in started
               if st.get(n, {}).get("digest") == services.get(n, {}).get("digest")}
        crashed = [n for n, s in now.items()
                   if s.get("restarts", 0) > 0 or s.get("last_exit") is not None]
        if crashed:
            tail = host.log_tail(r, d, crashed[0], 8).strip().replace("\n", " | ")
            raise HostError(f"{crashed[0]} exited after start: {tail[-600:]}")
        if pid and all(st.get(n, {}).get("ready") and st[n].get("digest") == spec["digest"]
                       and (n not in started or st[n].get("up_s", 0) >= READY_UP_S)
                       for n, spec in services.items()):
            return
        time.sleep(0.5)
    raise HostError(f"services not all running after {READY_TIMEOUT_S}s: "
                    + ", ".join(f"{n}={'up' if st.get(n, {}).get('running') else 'down'}"
                                for n in services))
