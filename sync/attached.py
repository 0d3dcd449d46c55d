"""What the responder and the manager share: one loaded BPF object, its counters, and
detaching it (every link dies with the object's file descriptors)."""

from __future__ import annotations

from typing import ClassVar, Self

from latscope.bpf import counters, libbpf


class Attached:
    """Mixin for a dataclass holding ``_obj``; subclasses name their counter enum."""

    COUNTERS: ClassVar[list[str]]
    _obj: libbpf.BpfObject | None

    def start(self) -> Self:
        raise NotImplementedError

    @property
    def bpf_object(self) -> libbpf.BpfObject:
        """The loaded object (program fds for accounting, maps for inspection)."""
        if self._obj is None:
            raise RuntimeError(f"{type(self).__name__.lower()} not started")
        return self._obj

    def counters(self) -> dict[str, int]:
        return counters.read(self.bpf_object.map("counters"), self.COUNTERS)

    def _release(self) -> None:
        """Close what the subclass opened beside the object (sockets, ring buffers)."""

    def close(self) -> None:
        if self._obj is not None:
            self._release()
            self._obj.close()
            self._obj = None

    def __enter__(self) -> Self:
        return self.start() if self._obj is None else self

    def __exit__(self, *exc: object) -> None:
        self.close()
