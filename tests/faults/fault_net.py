"""The fault suite's network: its topology file and its namespaces' prefix. Here, not in
conftest.py, because every conftest.py is imported under the one name ``conftest``: a test's
``from conftest import`` gets whichever directory's was loaded last (tests/sync's, when
benchmarks/faults.py names a sync test after this folder)."""

from __future__ import annotations

import os
from pathlib import Path

PREFIX = "lsxg" + os.environ["LSX_RUN_ID"]
TOPOLOGY = Path(__file__).with_name("faults.yaml")
