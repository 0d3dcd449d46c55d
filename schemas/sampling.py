"""The sampling contract every host computes the same way (design §3): which stride a
configured size means. Shared by the configuration and the agent, so a byte sampled on one
host is sampled on every host it crosses."""

from __future__ import annotations

MSS_STRIDE = 1448   # the seed's `size: 0` ("every packet") becomes one MSS

# How long the stream worker waits for a sampled byte's records from every host: its join
# window plus the allowed lateness (`latscope stream worker --window --lateness`). The agent
# sizes its hold so its records reach Kafka within their sum (agent.join_window_ms): one
# default for both sides, here.
JOIN_WINDOW_S = 1.0
JOIN_LATENESS_S = 0.5
JOIN_WINDOW_MS = round((JOIN_WINDOW_S + JOIN_LATENESS_S) * 1000)


def effective_size(size: int) -> int:
    """The stride used for a configured sampling size (0 = every packet = one MSS)."""
    if size < 0:
        raise ValueError(f"sampling size must be >= 0, got {size}")
    return size or MSS_STRIDE


def udp_modulus(size: int) -> int:
    """UDP is sampled by datagram hash: one datagram in size/MSS (at least every one)."""
    return max(1, effective_size(size) // MSS_STRIDE)


# Records/s a host's agent publishes at most by default before the fleet's stride level
# rises (producers/stride_level.py): at a steady 5 Gbit/s an agent's records cost about 4.5 µs
# each (every thread, Kafka's included) on top of a fixed ~0.5 % of a core, so this keeps it
# near 1 % of a core (docs/cpu-budget.md; benchmarks/agent_overhead.py measures it).
BUDGET_RECORDS_PER_S = 1000
