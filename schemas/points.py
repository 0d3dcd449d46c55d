"""The one table of LatScope's observation points (design §2, §3, §8).

Everything that knows about points derives from ``TABLE`` or is checked against it:
- the C enum ``ls_point`` in producers/bpf/latscope.h (tests/core/test_points.py compares;
  producers/layout.py refuses to import on a mismatch);
- the Avro enum ``Point`` of schemas/layer_event.avsc (same test; the stream checks at start);
- the hook candidates of each point, in the order the agent tries them at start-up
  (producers/probes.py; `latscope doctor` reports the walk);
- the stack rank, device block and segment layer of each point (stream/segments.py);
- the grouper's flush rules: the last point of a byte on a host (producers/grouping.py).

It lives in ``schemas`` because every stage may import it; it is plain data (no BPF, no
Kafka), so importing it costs nothing.

A point's number is its index here: the C enum value and the Avro enum symbol's position.
Append new points at the end (renumbering breaks records already written, see
schemas/EVOLUTION.md).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

LAYERS = ("socket", "tcp", "ip", "qdisc", "device", "virtual", "wire")
# One colour per layer in every view (live page, report): a layer reads the same everywhere.
LAYER_COLORS = {"socket": "#4e79a7", "tcp": "#f28e2b", "ip": "#59a14f", "qdisc": "#e15759",
                "device": "#b07aa1", "virtual": "#76b7b2", "wire": "#c9a227"}
# How a hook attaches; also a --skip-hook token (skips every candidate of that kind).
KINDS = ("tp_btf", "raw_tp", "fentry", "kprobe", "netfilter", "sockops", "xdp")


@dataclass(frozen=True)
class Hook:
    """One way to serve a point: programs of one BPF object (producers/bpf/<obj>.bpf.c).

    ``name`` is what doctor and the agent's status show; ``parts`` are the kernel hooks it
    uses (each one a --skip-hook token). ``prog`` serves the point; ``helpers`` are attached
    with it (sock_send's entry time) and the candidate stands or falls with them."""

    name: str
    kind: str
    obj: str
    prog: str
    helpers: tuple[str, ...] = ()
    nf_hook: str | None = None     # netfilter: NF_INET_<nf_hook>, attached per netns and family
    note: str = ""
    udp: bool = False              # a socket point's hook that serves UDP datagrams too

    @property
    def programs(self) -> tuple[str, ...]:
        return (self.prog, *self.helpers)

    @property
    def parts(self) -> tuple[str, ...]:
        return tuple(self.name.split(" ", 1)[0].split("+"))

    def skipped_by(self, tokens: Iterable[str]) -> str | None:
        """The first token that forces this candidate off: its name, one of its parts
        (``tp_btf/sock_send_length``), a part's prefix (``fexit``) or its kind."""
        prefixes = {p.split("/", 1)[0].split(":", 1)[0] for p in self.parts}
        for t in tokens:
            if t in (self.name, self.kind) or t in self.parts or t in prefixes:
                return t
        return None


@dataclass(frozen=True)
class PointDef:
    """One observation point. ``num`` is its index in TABLE (C enum value, Avro index)."""

    name: str
    direction: str                 # "tx" | "rx" (design §2's table)
    layer: str                     # layer of a segment that ends here by default
    rank: int                      # stack position inside one host (see stream/segments.py)
    hooks: tuple[Hook, ...]        # candidates, preferred first
    in_block: int = 0              # inside a device block: xdp/dev_queue before dev_rx/dev_xmit
    device: bool = False           # seen per device: labelled host:point@dev
    rx_block: bool = False         # receive block, ordered by the host's clock (br_netfilter)
    local: bool = False            # only a host holding the flow's socket passes it
    socket: bool = False           # the app's side: passed once per byte whatever the copies
    last_for: tuple[str, ...] = ()  # protocols whose byte is complete on a host here
    exit: bool = False             # complete here on a device that leaves the host
    opt_in: bool = False           # attached only when asked (xdp)
    note: str = ""

    @property
    def num(self) -> int:
        return INDEX[self.name]


def _tp(tp: str, obj: str, prog: str, *, entry: tuple[tuple[str, str], ...] = (),
        note: str = "", udp: bool = False) -> tuple[Hook, Hook]:
    """The BTF tracepoint and its raw-tracepoint twin (same logic, untyped args read with
    BPF_CORE_READ): a kernel that refuses the tp_btf program may still run the raw_tp one.
    ``entry``: (tracepoint, program) of each helper attached with it."""
    def name(kind: str) -> str:
        return "".join(f"{kind}/{t}+" for t, _ in entry) + f"{kind}/{tp}"

    def helpers(suffix: str) -> tuple[str, ...]:
        return tuple(p + suffix for _, p in entry)

    return (Hook(name("tp_btf"), "tp_btf", obj, prog, helpers(""), note=note, udp=udp),
            Hook(name("raw_tp"), "raw_tp", obj, f"{prog}_raw", helpers("_raw"), note=note,
                 udp=udp))


def _nf(hook: str) -> tuple[Hook]:
    return (Hook(f"netfilter:{hook}", "netfilter", "netfilter", "ip_point", nf_hook=hook),)


# The opt-in that lets tcp_tx change the traffic it measures (the resend mark).
RESEND_MARK_OPT = "agent.resend_mark (--resend-mark)"
# The opt-in for UDP's socket points, and the hooks it needs: a sys_enter program runs at
# every system call of every process on the host while the agent runs (docs/flow-context.md
# measures it), so without the opt-in these hooks count as skipped and the socket points'
# TCP-only candidates serve.
UDP_SOCKET_OPT = "agent.udp_socket_points (--udp-socket-points)"
SYSCALL_HOOKS = ("tp_btf/sys_enter", "raw_tp/sys_enter")
_UNTESTED = "not exercised on the workplace kernel (it refuses fentry and has no kprobes)"

TABLE: tuple[PointDef, ...] = (
    PointDef("sock_send", "tx", "socket", 0, local=True, socket=True, hooks=(
        *_tp("sock_send_length", "sock", "sock_send",
             entry=(("tcp_sendmsg_locked", "send_entry"), ("sys_enter", "udp_send_call")),
             note="TCP: entry time at the first tcp_sendmsg_locked of a call, bytes at "
                  "sock_send_length; UDP: entry time at the send syscall's sys_enter, the "
                  "datagram at its ip_out (so UDP's needs ip_out), the call ends at "
                  f"sock_send_length; opt-in: {UDP_SOCKET_OPT}", udp=True),
        *_tp("sock_send_length", "sock", "sock_send", entry=(("tcp_sendmsg_locked", "send_entry"),),
             note="TCP only (without UDP's opt-in or a sys_enter tracepoint: UDP "
                  "datagrams start at ip_out)"),
        Hook("fentry/tcp_sendmsg_locked+fexit/tcp_sendmsg", "fentry", "sock_fn", "sock_send_fexit",
             ("send_entry_fentry",), note="TCP only; " + _UNTESTED))),
    PointDef("tcp_tx", "tx", "tcp", 1, local=True, hooks=(
        Hook("sockops:HDR_OPT_LEN_CB (cgroup v2 root)", "sockops", "tcp_tx", "tcp_tx",
             note=f"observes only; with {RESEND_MARK_OPT} it adds 8 TCP option bytes to the data "
                  "segments of covered sockets: NOPs, or the resend mark (latscope.h) on a "
                  "segment sent again, so every host knows a resend"),
        Hook("fentry/__tcp_transmit_skb", "fentry", "tcp_fn", "tcp_tx_fentry", note=_UNTESTED),
        Hook("kprobe/__tcp_transmit_skb", "kprobe", "tcp_fn", "tcp_tx_kprobe", note=_UNTESTED)),
        note="Without it the socket and TCP transmit segments are reported merged "
             "(sock_send -> ip_out)."),
    PointDef("ip_out", "tx", "ip", 2, local=True, hooks=_nf("LOCAL_OUT")),
    PointDef("ip_post", "tx", "ip", 5, hooks=_nf("POST_ROUTING")),
    PointDef("dev_queue", "tx", "qdisc", 6, device=True, hooks=(
        *_tp("net_dev_queue", "dev", "dev_queue"),
        Hook("fentry/__dev_queue_xmit", "fentry", "dev_fn", "dev_queue_fentry",
             note="entry of __dev_queue_xmit: before tc egress; " + _UNTESTED),
        Hook("kprobe/__dev_queue_xmit", "kprobe", "dev_fn", "dev_queue_kprobe",
             note="entry of __dev_queue_xmit: before tc egress; " + _UNTESTED))),
    # No fentry/kprobe: the tracepoint sits in the inlined xmit_one/netdev_start_xmit, and
    # dev_hard_start_xmit takes a list of skbs.
    PointDef("dev_xmit", "tx", "device", 6, in_block=1, device=True, exit=True,
             hooks=_tp("net_dev_start_xmit", "dev", "dev_xmit")),
    PointDef("xdp", "rx", "device", 3, device=True, rx_block=True, opt_in=True, hooks=(
        Hook("xdp.frags (native, generic fallback)", "xdp", "xdp", "xdp_point"),)),
    # No fentry/kprobe: the tracepoint sits in the static __netif_receive_skb_core, whose
    # skb comes through a pointer to a pointer.
    PointDef("dev_rx", "rx", "device", 3, in_block=1, device=True, rx_block=True,
             hooks=_tp("netif_receive_skb", "dev", "dev_rx")),
    PointDef("ip_pre", "rx", "ip", 4, rx_block=True, hooks=_nf("PRE_ROUTING")),
    PointDef("ip_in", "rx", "ip", 5, local=True, hooks=_nf("LOCAL_IN")),
    PointDef("tcp_rx", "rx", "tcp", 6, local=True, hooks=(
        *_tp("tcp_probe", "tcp", "tcp_rx"),
        Hook("fentry/tcp_rcv_established", "fentry", "tcp_fn", "tcp_rx_fentry", note=_UNTESTED),
        Hook("kprobe/tcp_rcv_established", "kprobe", "tcp_fn", "tcp_rx_kprobe", note=_UNTESTED))),
    PointDef("sock_recv", "rx", "socket", 7, local=True, socket=True, last_for=("tcp", "udp"),
             hooks=(
        *_tp("sock_recv_length", "sock", "sock_recv",
             entry=(("sys_enter", "udp_recv_call"), ("sk_data_ready", "udp_ready_tp")),
             note="TCP: bytes at sock_recv_length; UDP: the datagram at the queue's head "
                  "when the read's syscall entered (or the one queued while it waited: "
                  f"sk_data_ready), reported at sock_recv_length; opt-in: {UDP_SOCKET_OPT}",
             udp=True),
        *_tp("sock_recv_length", "sock", "sock_recv", entry=(("sys_enter", "udp_recv_call"),),
             note="without sk_data_ready (kernels < 6.6): UDP reads that find their datagram "
                  "queued; a blocking read's is not reported", udp=True),
        *_tp("sock_recv_length", "sock", "sock_recv",
             note="TCP only (without UDP's opt-in or a sys_enter tracepoint: UDP "
                  "datagrams end at ip_in)"),
        Hook("fexit/tcp_recvmsg", "fentry", "sock_fn", "sock_recv_fexit",
             note="TCP only; " + _UNTESTED))),
)

# Not a point: marks byte ranges the sender's TCP retransmitted (LS_RETRANS, after the points).
# Where tcp_tx's sock_ops hook marks resent segments in the packet (latscope.h), every host
# knows them from the mark and this adds nothing; it serves kernels without that hook.
# First the programs that read the tracepoint's err (newer kernels also fire it for attempts
# that sent nothing: -EBUSY while the original is still queued in the host), then the ones
# for kernels whose tracepoint has no err and fires only for sent resends.
RETRANS_HOOKS: tuple[Hook, ...] = (
    *_tp("tcp_retransmit_skb", "tcp", "retrans_sent",
         note="err >= 0 only: resends TCP handed on"),
    *_tp("tcp_retransmit_skb", "tcp", "retrans",
         note="kernels whose tracepoint has no err (it fires for sent resends only)"))

# Not a point: the flow counters' drops with the kernel's reason (drops.bpf.c, LS_FS_DROP),
# attached with the flow counters only. It runs per dropped packet, never on a packet that
# gets through. First the programs that read the tracepoint's rx_sk (kernels >= 6.12: the
# namespace of a socket that refused the packet), then the ones for kernels without it.
DROP_HOOKS: tuple[Hook, ...] = (
    *_tp("kfree_skb", "drops", "drop", note="reason and rx_sk (kernels >= 6.12)"),
    *_tp("kfree_skb", "drops", "drop_nosk",
         note="kernels whose tracepoint has no rx_sk (5.17-6.11): the namespace from the "
              "device or the skb's socket"))

POINTS: tuple[str, ...] = tuple(p.name for p in TABLE)
INDEX: dict[str, int] = {n: i for i, n in enumerate(POINTS)}
BY_NAME: dict[str, PointDef] = {p.name: p for p in TABLE}
TX_POINTS = tuple(p.name for p in TABLE if p.direction == "tx")
RX_POINTS = tuple(p.name for p in TABLE if p.direction == "rx")
RETRANS_NUM = len(TABLE)          # LS_RETRANS in latscope.h
DEFAULT_POINTS = tuple(p.name for p in TABLE if not p.opt_in)


def c_enum() -> dict[str, int]:
    """``enum ls_point`` as latscope.h must spell it."""
    return {**{f"LS_{p.upper()}": i for i, p in enumerate(POINTS)}, "LS_RETRANS": RETRANS_NUM}


def all_hooks() -> tuple[Hook, ...]:
    return (*(h for p in TABLE for h in p.hooks), *RETRANS_HOOKS, *DROP_HOOKS)


def unknown_skip_tokens(tokens: Iterable[str]) -> list[str]:
    """Tokens of --skip-hook that force no candidate off (a typo would otherwise be silent)."""
    hooks = all_hooks()
    return [t for t in tokens if not any(h.skipped_by([t]) for h in hooks)]


def _check() -> None:
    for p in TABLE:
        bad = (p.layer not in LAYERS or p.direction not in ("tx", "rx") or not p.hooks
               or any(h.kind not in KINDS for h in p.hooks))
        if bad:
            raise ValueError(f"schemas/points.py: point {p.name} is malformed")


_check()
