"""XDP clock synchronisation (design §4).

``responder`` (XDP on each host: t2/t3, injected clock for simulated hosts), ``manager``
(UDP probes; t1 at the driver, t4 at XDP; one estimator per host), ``estimator`` (pure:
minimum-delay selection, Theil–Sen offset+drift, error bound, impossible samples discarded),
``wire`` (layouts parsed from ``bpf/sync.h``), ``keys`` (the secret, per-epoch SipHash keys
and their rotation; see SECURITY.md), ``publish``/``status`` (Kafka), ``attached`` (what
responder and manager share: one loaded object, its counters, detaching), ``cli``
(``latscope sync manager|responder|status``).
"""
