"""Where LatScope keeps what it builds and runs: never inside the repository's tracked files."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Heavy builds and service data (Kafka jars, influxd, logs): ``$LATSCOPE_CACHE``."""
    return Path(os.environ.get("LATSCOPE_CACHE", Path.home() / ".cache" / "latscope"))


def bpf_build_dir() -> Path:
    """Compiled BPF objects and the generated vmlinux.h (git-ignored ``build/bpf``)."""
    return Path(os.environ.get("LATSCOPE_BPF_BUILD", REPO_ROOT / "build" / "bpf"))
