"""LatScope: where network latency is spent, per layer and per hop."""

__version__ = "0.1.0"
