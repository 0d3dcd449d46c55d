"""Fixtures of the producer tests: a scratch network namespace with the `lsxa` prefix."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator

import pytest


@pytest.fixture
def scratch_netns() -> Iterator[str]:
    """A fresh namespace with `lo` up (and 127.0.0.1, ::1), removed even when the test fails."""
    name = f"lsxa-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        subprocess.run(["ip", "-n", name, "link", "set", "lo", "up"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def _bpf_link_ids() -> set[int]:
    out = subprocess.run(["bpftool", "-j", "link", "show"], check=True, capture_output=True,
                         text=True).stdout
    return {link["id"] for link in json.loads(out or "[]")}


@pytest.fixture
def link_ids() -> Callable[[], set[int]]:
    """IDs of every BPF link in the kernel right now (bpftool), to compare before/after."""
    return _bpf_link_ids
