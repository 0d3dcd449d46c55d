"""Clock sync for a whole topology built by ``latscope.lab.netns`` (the demo and tests).

One responder per non-manager host, on the device that holds the address the manager
syncs it at (design §8 address rules), with that host's injected clock; one manager in the
manager's namespace, running on a background thread. ``summary()`` gives the demo's
per-host ``clock`` section: estimate, error against the injected truth, and the bound.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from latscope import log
from latscope.lab.netns import Net, iface_name
from latscope.sync.estimator import EstimatorConfig
from latscope.sync.keys import SyncKeys
from latscope.sync.manager import Manager, ModelSink, SampleSink, Target
from latscope.sync.responder import DEFAULT_PORT, Responder, start_responder

_log = log.get("sync.topology")


@dataclass
class TopologySync:
    net: Net
    keys: SyncKeys = field(default_factory=SyncKeys.generate)   # one run's secret
    interval_s: float = 1.0
    burst: int = 4
    family: int = 4
    port: int = DEFAULT_PORT
    estimator: EstimatorConfig | None = None
    on_sample: SampleSink | None = None
    on_model: ModelSink | None = None
    responders: dict[str, Responder] = field(default_factory=dict, init=False)
    manager: Manager | None = field(default=None, init=False)

    def start(self) -> TopologySync:
        t = self.net.topology
        mgr = t.manager.name
        targets = {h: str(a) for h, a in t.sync_targets(self.family).items()}
        try:
            for host, addr in targets.items():
                self.responders[host] = start_responder(
                    self.net.ns_name(host), iface_name(self.net.topology, self.net.prefix, host, addr),
                    self.net.clock(host), self.keys, [str(t.source_addr(mgr, addr))],
                    port=self.port)
            self.manager = Manager([Target(h, a, self.port) for h, a in targets.items()],
                                   self.keys, netns=self.net.ns_name(mgr),
                                   interval_s=self.interval_s, burst=self.burst,
                                   estimator=self.estimator, on_sample=self.on_sample,
                                   on_model=self.on_model, name=mgr).start()
        except BaseException:
            self.close()
            raise
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self.manager.run, kwargs={"stop": self._stop},
                                        name="sync-manager", daemon=True)
        self._thread.start()
        return self

    def synced(self) -> bool:
        """Every host has a model."""
        return self.manager is not None and all(
            st.model is not None for st in self.manager.hosts.values())

    def summary(self) -> dict[str, dict]:
        """Per host: injected and estimated offset at the model's reference instant, their
        difference (estimated - true, signed) and the model's bound (design §8)."""
        out: dict[str, dict] = {}
        for host, st in (self.manager.hosts.items() if self.manager else []):
            m = st.model
            if m is None:
                out[host] = {"injected_offset_ns": None, "estimated_offset_ns": None,
                             "error_ns": None, "bound_ns": None, "samples": st.samples}
                continue
            truth = self.net.clock(host).true_offset(m.ref_ns)
            out[host] = {"injected_offset_ns": truth, "estimated_offset_ns": round(m.offset_ns),
                         "error_ns": round(m.offset_ns - truth),
                         "bound_ns": round(m.error_bound_ns), "drift_ppm": m.drift_ppm,
                         "samples": st.samples, "lost": st.lost}
        return out

    def close(self) -> None:
        if getattr(self, "_thread", None) is not None:
            self._stop.set()
            self._thread.join(10)
            self._thread = None
        if self.manager is not None:
            self.manager.close()
        for r in self.responders.values():
            r.close()
        self.responders.clear()

    def __enter__(self) -> TopologySync:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
