"""Names and helpers shared by every stage that reads or writes LatScope records."""

from __future__ import annotations

import re

# Re-exported for the stages that name points through records: the table is the source.
from latscope.schemas.points import LAYERS as LAYERS
from latscope.schemas.points import POINTS as POINTS
from latscope.schemas.points import RX_POINTS as RX_POINTS
from latscope.schemas.points import TX_POINTS as TX_POINTS

TOPIC_LAYER_EVENTS = "latscope.layer-events"
TOPIC_CLOCK = "latscope.clock"
TOPIC_CLOCK_SAMPLES = "latscope.clock-samples"
TOPIC_BREAKDOWNS = "latscope.breakdowns"
TOPIC_DEAD_LETTER = "latscope.dead-letter"
# FlowStats, one per (flow, host, interval), keyed by flow id like the layer events.
TOPIC_FLOW_STATS = "latscope.flow-stats"
# Stride demands (StrideDemand, producers/stride_level.py), keyed by host: compacted, so an
# agent that starts late still finds every host's current demand.
TOPIC_STRIDE = "latscope.stride"
STRIDE_GROUP = "latscope-stride-"   # an agent's reader of them (never joined; ACLs allow it)


def stride_topic(layer_topic: str) -> str:
    """The stride demands of the agents publishing to ``layer_topic``: the agents whose
    records are joined together share one level, and no others (a second pipeline on the
    same broker, a test's own topics)."""
    return TOPIC_STRIDE if layer_topic == TOPIC_LAYER_EVENTS else f"{layer_topic}.stride"
# How whoever comes first (an agent or the stream worker) creates the layer-events topic:
# the join's window runs on arrival, so on the broker's clock, not on each agent's.
LAYER_EVENTS_PARTITIONS = 4
LAYER_EVENTS_CONFIG = {"message.timestamp.type": "LogAppendTime"}
# A host's name as every stage takes it (RFC 1123 letters, digits, '-', plus '.' and '_'
# of FQDNs and config names); the lab's topology names are a subset.
HOST_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,252}")
# Keyed by host: compaction keeps every host's current entry (its clock model, its stride
# demand) for a reader that starts late.
COMPACTED = {"cleanup.policy": "compact"}
# Every LatScope topic as {name: (partitions, config)}: whoever creates them (the stage that
# comes first, or the secure stack, where no client may create topics) makes the same ones.
TOPICS: dict[str, tuple[int, dict[str, str]]] = {
    TOPIC_LAYER_EVENTS: (LAYER_EVENTS_PARTITIONS, LAYER_EVENTS_CONFIG),
    TOPIC_CLOCK: (1, COMPACTED),
    TOPIC_CLOCK_SAMPLES: (1, {}),
    TOPIC_BREAKDOWNS: (LAYER_EVENTS_PARTITIONS, {}),
    TOPIC_DEAD_LETTER: (1, {}),
    TOPIC_FLOW_STATS: (LAYER_EVENTS_PARTITIONS, {}),
    TOPIC_STRIDE: (1, COMPACTED),
}


def flow_id(flow: dict) -> str:
    """Stable key of a data-direction flow, e.g. ``tcp:10.1.0.1:40312>10.2.0.2:5201``.

    IPv6 addresses are bracketed so the port separator stays unambiguous.
    """

    def ep(addr: str, port: int) -> str:
        return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"

    return f"{flow['proto']}:{ep(flow['src'], flow['sport'])}>{ep(flow['dst'], flow['dport'])}"
