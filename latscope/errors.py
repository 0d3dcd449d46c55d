"""The errors every command shares."""

from __future__ import annotations


class UserError(Exception):
    """Bad input or a missing prerequisite: printed as one clear line, exit status 2."""
