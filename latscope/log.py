"""One logging setup for every command: human lines on stderr, stdout left for --json."""

from __future__ import annotations

import logging
import os
import sys


def setup(verbose: int = 0) -> None:
    level = logging.DEBUG if verbose > 0 else getattr(
        logging, os.environ.get("LATSCOPE_LOG", "INFO").upper(), logging.INFO)
    logging.basicConfig(
        level=level, stream=sys.stderr,
        format="%(asctime)s %(levelname).1s %(name)s: %(message)s", datefmt="%H:%M:%S")


def get(name: str) -> logging.Logger:
    return logging.getLogger(name if name.startswith("latscope") else f"latscope.{name}")
