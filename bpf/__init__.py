"""The platform under the agent and the clock sync: the libbpf binding and ring buffer
(``libbpf``), per-CPU counters, namespace entry (``netns``), the C-struct layout reader
(``layout``), the injected clock (``clock``) and the BPF headers both stages include
(``include/``); ``build`` compiles the BPF objects at build time (setup.py, ``make bpf``),
and a wheel carries them in ``objects/``. ``producers`` and ``sync`` build on it and never import each other.
"""
