"""Test traffic: a bulk or self-paced sender and a (deliberately slow) receiver, TCP/UDP, v4/v6.

Run inside a namespace as ``python -m latscope.lab.traffic recv|send ...``. The receiver prints
``ready`` once it listens (callers await that line instead of sleeping) and one JSON line
with what it received when the sender finishes or on SIGTERM; the sender prints one JSON
line too. ``start_flows(net)`` runs every flow of a built topology (receivers first).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from latscope.lab.netns import Net
    from latscope.lab.topology import Flow, Topology

UDP_END = b"LATSCOPE-END"       # end-of-flow marker datagram (sent a few times: UDP may drop)
UDP_PAYLOAD = 1200              # fits a 1500-byte MTU for v4 and v6
TCP_CHUNK = 65536


class _Stop(Exception):
    """Raised by the SIGTERM/SIGINT handler to leave a blocking call and report."""


class _Deferred:
    active = False
    pending: int | None = None


def _on_signal(signum: int, frame: object) -> None:
    if _Deferred.active:          # inside _counting: raised once the count is taken
        _Deferred.pending = signum
        return
    raise _Stop(signum)


@contextlib.contextmanager
def _counting() -> Iterator[None]:
    """A stop signal arriving inside waits until the block is done. The reports' byte counts
    are a truth tests compare against (sent = received): raised between a socket call and
    its count (or by sendall after it sent), a stop would lose what was handed over."""
    _Deferred.active = True
    try:
        yield
    finally:
        _Deferred.active = False
    if _Deferred.pending is not None:
        signum, _Deferred.pending = _Deferred.pending, None
        raise _Stop(signum)


def _send_counted(s: socket.socket, data: bytes, out: dict[str, Any]) -> None:
    """sendall, counting into out["bytes"] exactly what the kernel took: waiting happens in
    select (a stop raises there, with nothing half-sent); each non-blocking send and its
    count run with a stop deferred."""
    view = memoryview(data)
    while view:
        select.select([], [s], [])
        with _counting():
            try:
                n = s.send(view, socket.MSG_DONTWAIT)
            except BlockingIOError:
                n = 0
            out["bytes"] += n
        view = view[n:]


def _recv_counted(conn: socket.socket, size: int, out: dict[str, Any]) -> bytes:
    """recv, counting into out["bytes"] what it returned (waiting in select, see above)."""
    while True:
        select.select([conn], [], [])
        with _counting():
            try:
                data = conn.recv(size, socket.MSG_DONTWAIT)
            except BlockingIOError:
                continue
            out["bytes"] += len(data)
            return data


def _install_stop_handlers() -> None:
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _on_signal)


def _family(addr: str) -> int:
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def _rate_of(nbytes: int, start: float | None, end: float | None) -> float:
    if start is None or end is None or end <= start:
        return 0.0
    return nbytes * 8 / (end - start)


def receive(proto: str, bind: str, port: int, *, reader_delay_ms: float = 0.0,
            read_size: int = TCP_CHUNK, idle_timeout: float = 3.0,
            ready: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """Receive one flow; sleeps ``reader_delay_ms`` after every read (a slow application).

    TCP: one connection, until EOF. UDP: until the end marker, or ``idle_timeout`` seconds
    without a datagram after the first one. Returns counters and throughput (first to last
    byte).
    """
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    out: dict[str, Any] = {"role": "recv", "proto": proto, "bind": bind, "port": port,
                           "bytes": 0, "reads": 0, "reader_delay_ms": reader_delay_ms,
                           "read_size": read_size, "stopped_by": None}
    first = last = None
    delay = reader_delay_ms / 1000.0
    with socket.socket(_family(bind), kind) as ls:
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((bind, port))
        try:
            if proto == "tcp":
                ls.listen(1)
                ready()
                conn, peer = ls.accept()
                out["peer"] = f"{peer[0]}:{peer[1]}"
                with conn:
                    while True:
                        data = _recv_counted(conn, read_size, out)
                        if not data:
                            out["stopped_by"] = "eof"
                            break
                        last = time.monotonic()
                        first = first or last
                        out["reads"] += 1
                        if delay:
                            time.sleep(delay)
            else:
                out["datagrams"] = 0
                ready()
                while True:
                    ls.settimeout(idle_timeout if first else None)
                    try:
                        data = ls.recv(max(read_size, 65535))
                    except TimeoutError:
                        out["stopped_by"] = "idle"
                        break
                    if data == UDP_END:
                        out["stopped_by"] = "end-marker"
                        break
                    last = time.monotonic()
                    first = first or last
                    out["bytes"] += len(data)
                    out["datagrams"] += 1
                    out["reads"] += 1
                    if delay:
                        time.sleep(delay)
        except _Stop:
            out["stopped_by"] = "signal"
    out["elapsed_s"] = round((last - first), 6) if first and last else 0.0
    out["throughput_bps"] = round(_rate_of(out["bytes"], first, last))
    return out


def send(proto: str, dst: str, port: int, *, nbytes: int | None = None,
         rate_bps: int | None = None, duration_s: float | None = None,
         chunk: int | None = None) -> dict[str, Any]:
    """Send to ``dst``: as fast as possible, or paced at ``rate_bps`` by the app itself.

    Stops after ``nbytes``, after ``duration_s``, or on SIGTERM, whichever comes first.
    TCP waits for the receiver to close after our FIN, so elapsed covers delivery.
    """
    kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
    if chunk is None:
        chunk = TCP_CHUNK if proto == "tcp" else UDP_PAYLOAD
        if rate_bps:   # about 100 writes a second when paced
            chunk = max(1, min(chunk, rate_bps // 8 // 100))
    payload = bytes(chunk)
    out: dict[str, Any] = {"role": "send", "proto": proto, "dst": dst, "port": port,
                           "bytes": 0, "writes": 0, "rate_bps": rate_bps, "stopped_by": None}
    if proto == "udp":
        out.update(datagrams=0, enobufs=0)
    start = time.monotonic()
    end_at = start + duration_s if duration_s else None
    byte_rate = rate_bps / 8 if rate_bps else None
    with socket.socket(_family(dst), kind) as s:
        try:
            s.connect((dst, port))
            start = time.monotonic()
            end_at = start + duration_s if duration_s else None
            while True:
                if nbytes is not None and out["bytes"] >= nbytes:
                    out["stopped_by"] = "bytes"
                    break
                now = time.monotonic()
                if end_at is not None and now >= end_at:
                    out["stopped_by"] = "duration"
                    break
                if byte_rate:
                    due = start + out["bytes"] / byte_rate
                    if due > now:
                        time.sleep(min(due - now, end_at - now if end_at else due - now))
                        continue
                n = chunk if nbytes is None else min(chunk, nbytes - out["bytes"])
                if proto == "tcp":
                    _send_counted(s, payload[:n], out)
                else:
                    with _counting():   # one datagram: sent and counted, or neither
                        try:
                            s.send(payload[:n])
                        except OSError as e:   # local qdisc full: the datagram was not sent
                            if e.errno != errno.ENOBUFS:
                                raise
                            out["enobufs"] += 1
                            continue
                        out["datagrams"] += 1
                        out["bytes"] += n
                out["writes"] += 1
        except _Stop:
            out["stopped_by"] = "signal"
        sent_at = time.monotonic()
        with contextlib.suppress(_Stop, OSError):
            if proto == "tcp":
                s.shutdown(socket.SHUT_WR)
                s.settimeout(30)
                while s.recv(4096):
                    pass
            else:
                for _ in range(3):
                    s.send(UDP_END)
                    time.sleep(0.02)
    done = time.monotonic()
    out["elapsed_s"] = round(done - start, 6)
    out["send_elapsed_s"] = round(sent_at - start, 6)
    out["throughput_bps"] = round(_rate_of(out["bytes"], start, done))
    return out


# ---- running topology flows ------------------------------------------------------------------

@dataclass
class FlowRun:
    """One flow's receiver and sender processes inside the built namespaces."""
    flow: Flow
    receiver: subprocess.Popen
    sender: subprocess.Popen | None = None
    result: dict[str, Any] | None = field(default=None)

    def wait(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for both ends; returns {"flow", "sender", "receiver"} with their JSON."""
        if self.result is not None:
            return self.result
        deadline = time.monotonic() + timeout
        try:
            sender = _collect(self.sender, deadline) if self.sender else None
        except BaseException:
            if self.receiver.poll() is None:   # it would wait for a sender that is gone
                self.receiver.terminate()
                self.receiver.wait(5)
            raise
        receiver = _collect(self.receiver, deadline)
        self.result = {"flow": self.flow.name, "sender": sender, "receiver": receiver}
        if self.flow.proto == "udp" and sender is not None:   # UDP loss is counted, not hidden
            self.result["lost_datagrams"] = sender["datagrams"] - receiver["datagrams"]
        return self.result

    def stop(self, timeout: float = 10.0) -> dict[str, Any]:
        """End an open-ended (paced) flow now: SIGTERM the sender, then collect both."""
        if self.sender is not None and self.sender.poll() is None:
            self.sender.send_signal(signal.SIGTERM)
        return self.wait(timeout)


def _collect(proc: subprocess.Popen, deadline: float) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        proc.terminate()
        out, err = proc.communicate(timeout=5)
    lines = [ln for ln in (out or "").splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"traffic process {proc.args!r} exited {proc.returncode}: "
                           f"{(err or '').strip()[-500:]}")
    return json.loads(lines[-1])


def _await_ready(proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while (left := deadline - time.monotonic()) > 0:
        r, _, _ = select.select([proc.stdout], [], [], left)
        if not r:
            break
        line = proc.stdout.readline()
        if line.strip() == "ready":
            return
        if not line:   # exited before listening
            err = proc.stderr.read() if proc.stderr else ""
            raise RuntimeError(f"receiver {proc.args!r} exited {proc.wait()}: {err.strip()}")
    raise TimeoutError(f"receiver {proc.args!r} not ready within {timeout:.1f}s")


def recv_argv(flow: Flow, bind: str, tag: str) -> list[str]:
    return [sys.executable, "-m", "latscope.lab.traffic", "recv", "--proto", flow.proto,
            "--bind", bind, "--port", str(flow.port),
            "--reader-delay-ms", str(flow.reader_delay_ms), "--read-size", str(flow.read_size),
            "--tag", tag]


def send_argv(flow: Flow, dst: str, tag: str, duration_s: float | None = None) -> list[str]:
    argv = [sys.executable, "-m", "latscope.lab.traffic", "send", "--proto", flow.proto,
            "--dst", dst, "--port", str(flow.port), "--tag", tag]
    if flow.bytes is not None:
        argv += ["--bytes", str(flow.bytes)]
    if flow.rate_bps is not None:
        argv += ["--rate", str(flow.rate_bps)]
    duration = flow.duration_s if flow.duration_s is not None else duration_s
    if duration is not None:
        argv += ["--duration", str(duration)]
    return argv


def start_flows(net: Net, flows: Iterable[Flow | str] | Topology | None = None, *,
                duration_s: float | None = None, ready_timeout: float = 10.0) -> list[FlowRun]:
    """Start receivers (awaiting each one's ``ready``), then senders, for the given flows
    (default: all of the topology's). ``duration_s`` bounds every flow without its own
    duration_s (``bytes`` still ends a flow earlier); a paced flow with neither runs until
    ``FlowRun.stop()``."""
    topo = net.topology
    if flows is None or hasattr(flows, "flows"):   # None, or a Topology: all of its flows
        flows = topo.flows if flows is None else flows.flows
    chosen = [topo.flow(f) if isinstance(f, str) else f for f in flows]
    runs: list[FlowRun] = []
    try:
        for f in chosen:
            dst = str(topo.flow_dst_addr(f))
            rx = net.popen(f.dst, recv_argv(f, dst, f"{net.prefix}-{f.name}"),
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            runs.append(FlowRun(f, rx))
            _await_ready(rx, ready_timeout)
        for run in runs:
            dst = str(topo.flow_dst_addr(run.flow))
            run.sender = net.popen(run.flow.src,
                                   send_argv(run.flow, dst, f"{net.prefix}-{run.flow.name}",
                                             duration_s),
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    except BaseException:
        for run in runs:
            for p in (run.sender, run.receiver):
                if p is not None and p.poll() is None:
                    p.kill()
                    p.wait()
        raise
    return runs


def run_flow(net: Net, flow: Flow | str, timeout: float = 60.0,
             duration_s: float | None = None) -> dict[str, Any]:
    """Run one flow to completion; returns {"flow", "sender", "receiver"}."""
    (run,) = start_flows(net, [flow], duration_s=duration_s)
    return run.wait(timeout)


# ---- command line -----------------------------------------------------------------------------

def _rate_arg(value: str) -> int:
    from latscope.lab.topology import parse_rate  # pydantic import only when a rate is given
    try:
        return parse_rate(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"{value!r}: {e}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m latscope.lab.traffic",
                                description="LatScope test traffic: sender and receiver.")
    sub = p.add_subparsers(dest="mode", required=True)
    r = sub.add_parser("recv", help="receive one flow; prints 'ready', then a JSON report")
    r.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    r.add_argument("--bind", default="0.0.0.0", help="address to listen on (v4 or v6)")
    r.add_argument("--port", type=int, required=True)
    r.add_argument("--reader-delay-ms", type=float, default=0.0,
                   help="sleep this long after every read (a slow application)")
    r.add_argument("--read-size", type=int, default=TCP_CHUNK, help="bytes per read()")
    r.add_argument("--idle-timeout", type=float, default=3.0,
                   help="UDP: stop this long after the last datagram")
    r.add_argument("--tag", default="", help="label shown in ps (e.g. the test prefix)")
    s = sub.add_parser("send", help="send one flow; prints a JSON report")
    s.add_argument("--proto", choices=("tcp", "udp"), default="tcp")
    s.add_argument("--dst", required=True, help="destination address (v4 or v6)")
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--bytes", type=int, default=None, help="stop after this many bytes")
    s.add_argument("--rate", type=_rate_arg, default=None,
                   help="pace the application at this rate (2mbit, 500kbit, bits/s)")
    s.add_argument("--duration", type=float, default=None, help="stop after this many seconds")
    s.add_argument("--chunk", type=int, default=None,
                   help="bytes per write (default 64 KiB TCP, 1200 UDP; ~100 writes/s paced)")
    s.add_argument("--tag", default="", help="label shown in ps (e.g. the test prefix)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _install_stop_handlers()
    if args.mode == "recv":
        def ready() -> None:
            print("ready", flush=True)
        report = receive(args.proto, args.bind, args.port, reader_delay_ms=args.reader_delay_ms,
                         read_size=args.read_size, idle_timeout=args.idle_timeout, ready=ready)
    else:
        if args.bytes is None and args.rate is None and args.duration is None:
            print("send: give --bytes, --rate or --duration (or stop it with SIGTERM)",
                  file=sys.stderr)
        report = send(args.proto, args.dst, args.port, nbytes=args.bytes, rate_bps=args.rate,
                      duration_s=args.duration, chunk=args.chunk)
    if args.tag:
        report["tag"] = args.tag
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
