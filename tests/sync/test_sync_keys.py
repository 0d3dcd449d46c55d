"""Where the sync secret comes from (a 0600 key file or the environment, never argv) and
that no message ever carries it."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from latscope import settings
from latscope.errors import UserError
from latscope.sync.keys import ENV_VAR, SyncKeys, read_key_file

MANAGER = [sys.executable, "-m", "latscope", "sync", "manager", "--host", "h1=10.0.0.1",
           "--no-kafka", "--duration", "0"]


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The manager CLI in a new, empty network namespace: should a key wrongly pass, it
    finds no route and attaches nothing to this machine's interfaces."""
    base = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    return subprocess.run(["unshare", "--net", *MANAGER, *args], capture_output=True,
                          text=True, timeout=60, env={**base, **(env or {})})


def _pieces(secret: str) -> list[str]:
    """Every 8-character piece of a secret: none may appear in any output."""
    return [secret[i:i + 8] for i in range(0, len(secret) - 7, 4)]


@pytest.mark.root
def test_a_key_file_others_can_read_is_refused_by_name(tmp_path: Path) -> None:
    keys = SyncKeys.generate()
    path = tmp_path / "sync.key"
    path.write_text(keys.to_hex() + "\n")
    path.chmod(0o644)
    out = _run("--key-file", str(path))
    assert out.returncode == 2
    assert f"sync key file {path} is accessible by group or others (mode 0644)" in out.stderr
    assert f"chmod 600 {path}" in out.stderr
    assert not any(p in out.stdout + out.stderr for p in _pieces(keys.to_hex()))
    path.chmod(0o640)
    with pytest.raises(UserError, match="mode 0640"):
        settings.sync_keys(str(path))


@pytest.mark.root
@pytest.mark.parametrize("content", [
    "correct-horse-battery-staple-secret",        # a password, not a key
    "ab" * 31 + "a",                              # 63 hex digits
    "0123456789abcdef" * 3 + "0123456789abcdeZ",  # 64 characters, one not hex
])
def test_a_malformed_key_is_refused_without_its_text(tmp_path: Path, content: str) -> None:
    path = tmp_path / "key"
    path.write_text(content)
    path.chmod(0o600)
    out = _run("--key-file", str(path))
    assert out.returncode == 2
    assert f"sync key file {path}: malformed sync key: expected 64 hex digits" in out.stderr
    assert not any(p in out.stderr for p in _pieces(content))

    env = _run(env={ENV_VAR: content})
    assert env.returncode == 2
    assert f"{ENV_VAR}: malformed sync key" in env.stderr
    assert not any(p in env.stderr for p in _pieces(content))


def test_key_from_the_environment_or_a_file_never_argv(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    keys = SyncKeys.generate()
    monkeypatch.setenv(ENV_VAR, keys.to_hex())
    assert settings.sync_keys(None) == keys
    path = tmp_path / "key"
    path.write_text(SyncKeys.generate().to_hex())
    path.chmod(0o600)
    assert settings.sync_keys(str(path)) != keys        # an explicit file wins
    assert settings.sync_keys(str(path)) == read_key_file(path)
    help_text = subprocess.run([*MANAGER[:5], "--help"], capture_output=True, text=True,
                               timeout=60).stdout
    assert "--key-file" in help_text and "--token" not in help_text


def test_a_missing_key_file_is_created_private(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    path = tmp_path / "sub" / "key"
    first = settings.sync_keys(str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert settings.sync_keys(str(path)) == first       # whoever starts second reads it
    assert list(path.parent.iterdir()) == [path]        # no temporary file left behind


def test_nothing_prints_the_secret() -> None:
    keys = SyncKeys.generate(period_s=5)
    from latscope.sync.manager import Manager, Target
    from latscope.sync.responder import Responder

    texts = [repr(keys), str(keys), repr(Manager([Target("h", "10.0.0.1")], keys)),
             repr(Responder("eth0", keys, ["10.0.0.1"]))]
    for text in texts:
        assert not any(p in text for p in _pieces(keys.to_hex())), text
        assert keys.secret.hex() not in text and repr(keys.secret) not in text
