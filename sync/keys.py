"""The sync MAC and its rotating keys (sync/SECURITY.md).

One shared secret (256 bits, from a 0600 key file or ``$LATSCOPE_SYNC_KEY``, never argv)
derives a SipHash-2-4 key per *epoch*: ``floor(wall clock / period_s)``. Every side
installs the previous, current and next epoch's keys into its BPF maps and rotates them as
epochs pass, so a switch never leaves a gap (probes in flight, or a host whose wall clock
is up to one period off, still verify) and a key is dead two periods after its epoch.
The same SipHash runs in BPF (``sync/bpf/siphash.h``); ``siphash24`` here is the reference
the tests hold both to.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import os
import secrets
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from latscope import log, threads

_log = log.get("sync.keys")

ENV_VAR = "LATSCOPE_SYNC_KEY"
SECRET_BYTES = 32
DEFAULT_PERIOD_S = 60.0
_MASK = (1 << 64) - 1


class KeyFileError(ValueError):
    """A key file or variable LatScope refuses; the message never contains the key."""


def _rotl(x: int, b: int) -> int:
    return ((x << b) | (x >> (64 - b))) & _MASK


def _round(v0: int, v1: int, v2: int, v3: int) -> tuple[int, int, int, int]:
    v0 = (v0 + v1) & _MASK
    v1 = _rotl(v1, 13) ^ v0
    v0 = _rotl(v0, 32)
    v2 = (v2 + v3) & _MASK
    v3 = _rotl(v3, 16) ^ v2
    v0 = (v0 + v3) & _MASK
    v3 = _rotl(v3, 21) ^ v0
    v2 = (v2 + v1) & _MASK
    v1 = _rotl(v1, 17) ^ v2
    v2 = _rotl(v2, 32)
    return v0, v1, v2, v3


def siphash24(key: bytes, data: bytes) -> int:
    """SipHash-2-4 of any ``data`` under a 16-byte ``key`` (the reference algorithm)."""
    if len(key) != 16:
        raise ValueError("SipHash key must be 16 bytes")
    k0, k1 = struct.unpack("<QQ", key)
    v0, v1 = 0x736F6D6570736575 ^ k0, 0x646F72616E646F6D ^ k1
    v2, v3 = 0x6C7967656E657261 ^ k0, 0x7465646279746573 ^ k1
    whole = len(data) // 8 * 8
    tail = data[whole:] + b"\0" * (7 - len(data) % 8) + bytes([len(data) & 0xFF])
    for (m,) in struct.iter_unpack("<Q", data[:whole] + tail):
        v3 ^= m
        v0, v1, v2, v3 = _round(*_round(v0, v1, v2, v3))
        v0 ^= m
    v2 ^= 0xFF
    for _ in range(4):
        v0, v1, v2, v3 = _round(v0, v1, v2, v3)
    return v0 ^ v1 ^ v2 ^ v3


@dataclass(frozen=True)
class SyncKeys:
    """The shared secret and the epoch schedule. ``repr`` never shows the secret."""

    secret: bytes = field(repr=False)
    period_s: float = DEFAULT_PERIOD_S
    # The wall clock epochs are counted on (tests skew one side to model NTP error).
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)
    _derived: dict[int, bytes] = field(default_factory=dict, init=False, repr=False,
                                       compare=False)

    def __post_init__(self) -> None:
        if len(self.secret) != SECRET_BYTES:
            raise KeyFileError(f"sync key: expected {SECRET_BYTES} bytes")
        if not self.period_s > 0:
            raise ValueError(f"sync key period {self.period_s!r}: expected > 0 seconds")

    @classmethod
    def generate(cls, period_s: float = DEFAULT_PERIOD_S) -> SyncKeys:
        return cls(secrets.token_bytes(SECRET_BYTES), period_s)

    @classmethod
    def from_hex(cls, text: str, source: str, period_s: float = DEFAULT_PERIOD_S) -> SyncKeys:
        """Parse a key as stored; errors name ``source``, never the text."""
        raw = text.strip()
        if len(raw) != 2 * SECRET_BYTES or any(c not in "0123456789abcdefABCDEF" for c in raw):
            raise KeyFileError(f"{source}: malformed sync key: expected {2 * SECRET_BYTES} hex "
                            f"digits ({8 * SECRET_BYTES} bits; `latscope` creates one when "
                            "the default key file is missing)")
        return cls(bytes.fromhex(raw), period_s)

    def to_hex(self) -> str:
        return self.secret.hex()

    def epoch(self, now: float | None = None) -> int:
        return math.floor((self.clock() if now is None else now) / self.period_s)

    def window(self, now: float | None = None) -> list[int]:
        """The epochs whose keys are installed now: previous, current, next."""
        e = self.epoch(now)
        return [e - 1, e, e + 1]

    def key(self, epoch: int) -> bytes:
        """The 16-byte SipHash key of ``epoch`` (HMAC-SHA256 of the secret, truncated)."""
        k = self._derived.get(epoch)
        if k is None:
            if len(self._derived) > 16:
                self._derived.clear()
            k = self._derived[epoch] = hmac.new(
                self.secret, b"latscope-sync-v2" + struct.pack("<q", epoch),
                hashlib.sha256).digest()[:16]
        return k

    def mac(self, epoch: int, data: bytes) -> int:
        return siphash24(self.key(epoch), data)


# ---- key files ---------------------------------------------------------------------------

def read_key_file(path: Path, period_s: float = DEFAULT_PERIOD_S) -> SyncKeys:
    """A key file must be a regular file no one but its owner can read (mode 0600 or
    stricter); anything else is refused with the file's name, never its content."""
    try:
        st = os.stat(path)
    except OSError as e:
        raise KeyFileError(f"sync key file {path}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise KeyFileError(f"sync key file {path}: not a regular file")
    if st.st_mode & 0o077:
        raise KeyFileError(f"sync key file {path} is accessible by group or others (mode "
                        f"{stat.S_IMODE(st.st_mode):04o}): refusing it; `chmod 600 {path}` "
                        "and, if others could read it, make a new key")
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise KeyFileError(f"sync key file {path}: cannot read it: "
                        f"{getattr(e, 'strerror', None) or 'not text'}") from None
    return SyncKeys.from_hex(text, f"sync key file {path}", period_s)


def create_key_file(path: Path) -> bool:
    """A new random key at ``path`` (0600) unless one exists; True if this call made it.
    Written to a private temporary file and hard-linked into place, so a concurrent reader
    sees the whole key or no file, and two creators cannot both win."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(SECRET_BYTES) + "\n")
        try:
            os.link(tmp, path)
        except FileExistsError:
            return False
        return True
    finally:
        tmp.unlink(missing_ok=True)


# ---- installing keys into BPF maps ---------------------------------------------------------

class KeyRotation:
    """Keeps the previous, current and next epoch's keys in one or more BPF ``keys`` maps
    (epoch -> struct sync_key) and drops older ones, on a thread, until ``stop()``."""

    def __init__(self, keys: SyncKeys, maps: Iterable, name: str = "sync-keys") -> None:
        self.keys = keys
        self.maps = list(maps)
        self.epochs: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._name = name

    def update(self) -> list[int]:
        want = self.keys.window()
        if want != self.epochs:
            for m in self.maps:
                for e in want:
                    m.update(struct.pack("<q", e), self.keys.key(e))
                for raw in m.keys():
                    if struct.unpack("<q", raw)[0] not in want:
                        m.delete(raw)
            self.epochs = want
        return want

    def start(self) -> KeyRotation:
        self.update()
        self._thread = threads.start(self._run, self._name)
        return self

    def _run(self) -> None:
        # Checked often relative to the period: rotation lands within period/8 of a
        # boundary, well inside the one period of slack the next/previous keys give.
        step = min(1.0, self.keys.period_s / 8)
        while not self._stop.wait(step):
            try:
                self.update()
            except OSError as e:  # maps closed under us at shutdown
                _log.debug("key rotation stopped: %s", e)
                return

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
