"""Where LatScope keeps what it builds and runs: never inside the repository's tracked files."""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def cache_dir() -> Path:
    """Heavy builds and service data (Kafka jars, influxd, logs): ``$LATSCOPE_CACHE``."""
    return Path(os.environ.get("LATSCOPE_CACHE", Path.home() / ".cache" / "latscope"))


def source_checkout() -> Path | None:
    """The repository root when running from a source tree (an editable install or a
    checkout on sys.path); None for an installed wheel, where REPO_ROOT is site-packages'
    parent and nothing but the package itself can be relied on."""
    return REPO_ROOT if (REPO_ROOT / "setup.py").is_file() and (REPO_ROOT / "bpf").is_dir() else None


def bpf_build_dir() -> Path:
    """A checkout's compiled BPF objects and its vmlinux.h (git-ignored ``build/bpf``, made by
    ``make bpf`` and the editable install); ``$LATSCOPE_BPF_BUILD`` overrides it."""
    return Path(os.environ.get("LATSCOPE_BPF_BUILD", REPO_ROOT / "build" / "bpf"))
