"""What the suite needs from the machine, and what happens when it is missing.

Under ``make test`` and in CI (``CI=true`` or ``LATSCOPE_TESTS_STRICT=1``) a missing service,
privilege or tool is an error: a green run must have run everything. A developer's plain
``pytest`` may skip instead, and says why.
"""

from __future__ import annotations

import os

import pytest


def strict() -> bool:
    return os.environ.get("CI", "").lower() == "true" or os.environ.get("LATSCOPE_TESTS_STRICT") == "1"


def missing(reason: str) -> None:
    """Fail (strict) or skip (a developer's run) because ``reason`` is not available."""
    if strict():
        pytest.fail(f"required by the suite and missing: {reason}", pytrace=False)
    pytest.skip(reason)
