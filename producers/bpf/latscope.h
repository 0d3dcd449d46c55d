/* Shared between the BPF C and the Python decoder (producers/layout.py parses this file at
 * import time, so the two cannot drift). Keep to the grammar layout.py understands:
 *   struct ls_event { <__u8|__u16|__u32|__u64|__s64|char> name[N]?; ... };
 *   enum ls_point { LS_<NAME> = <n>, ... };   and   #define LS_<NAME> <n>
 * Fields are ordered largest first, so there is no padding. */
#ifndef LATSCOPE_H
#define LATSCOPE_H

/* Observation points; value = index in latscope.schemas.points.TABLE (the one point table;
 * layout.py and tests/core/test_points.py hold this enum to it). LS_RETRANS is not a point:
 * it marks a byte range the sender's TCP retransmitted. */
enum ls_point {
	LS_SOCK_SEND = 0,
	LS_TCP_TX = 1,
	LS_IP_OUT = 2,
	LS_IP_POST = 3,
	LS_DEV_QUEUE = 4,
	LS_DEV_XMIT = 5,
	LS_XDP = 6,
	LS_DEV_RX = 7,
	LS_IP_PRE = 8,
	LS_IP_IN = 9,
	LS_TCP_RX = 10,
	LS_SOCK_RECV = 11,
	LS_RETRANS = 12,
};

/* Counter slots of the per-CPU `counters` array. */
enum ls_counter {
	LS_C_HITS = 0,        /* events emitted (a range holding >= 1 sampled byte) */
	LS_C_RB_DROPS = 1,    /* ring buffer full: event lost */
	LS_C_UNPARSED = 2,    /* headers we could not read (or > 4 IPv6 extension headers) */
	LS_C_RESENT = 3,      /* resent segments the sender marked (tcp_tx.bpf.c) */
	LS_C_MARK_FAILED = 4, /* resent segments left unmarked: no option room, no socket storage */
	LS_C_FLOW_FULL = 5,   /* flow_stats map full: a flow's counts not kept (flow_stats.bpf.h) */
	LS_C_DROP_NOHDR = 6,  /* an IP packet dropped in a covered namespace whose IP header was not
			       * where the skb says (drops.bpf.c): not counted to any flow */
	LS_C_MAX = 7,
};

#define LS_F_UDP 1        /* seq is a datagram hash, len is 1 */
#define LS_F_RESENT 2     /* TCP: a resent copy (the segment's mark covers the range) */
#define LS_F_WAIT 4       /* the wait_* fields hold the range's tracked byte's socket-wait
			   * causes (tcp_tx: sender; sock_recv: receiver; wait.bpf.h) */

/* Socket-wait causes (wait.bpf.h): why a tracked sampled byte waited in a socket, each the
 * µs of its socket segment the cause held. Sender (sock_send -> tcp_tx): the first of
 * tcp_write_xmit's own tests that stops the head of the unsent queue (pacing, cwnd, rwnd,
 * Nagle; autocork and TSQ from the TSQ_THROTTLED flag); OTHER: none held. Receiver
 * (tcp_rx -> sock_recv): UNREAD, in order (rcv_nxt past it) and not read; OOO: waiting
 * for a hole before it. Value = index in the storage and the order of ls_event's wait_*. */
enum ls_wait {
	LS_W_NAGLE = 0,
	LS_W_CWND = 1,
	LS_W_RWND = 2,
	LS_W_SNDBUF = 3,
	LS_W_PACING = 4,
	LS_W_OTHER = 5,
	LS_W_UNREAD = 6,
	LS_W_OOO = 7,
	LS_W_MAX = 8,
};

/* Up to this many covered network namespaces are compared as constants by every probe
 * (common.bpf.h ls_netns_ok); more, and a map lookup decides. */
#define LS_NETNS_FAST 8

/* The resend mark the sender's tcp_tx (sock_ops) writes into every segment its TCP sends
 * again (a retransmission, or a segment the local qdisc dropped and TCP sends anew): an
 * experimental TCP option (RFC 6994: kind 254, length 8, a 16-bit ExID, then the 32-bit
 * sequence number where the resent bytes end), in the 8 option bytes tcp_tx reserves. A
 * segment TCP sends again may carry bytes never sent before (a retry after a local drop
 * takes in more of the queue): those, from the end on, are first copies. The end is a
 * sequence number, not a length, so it holds in every segment GSO cuts the packet into.
 * Every point that parses the segment, on every host, sees it; receivers ignore unknown
 * options (RFC 9293). */
#define LS_OPT_KIND 254
#define LS_OPT_LEN 8
#define LS_OPT_EXID 0x4C53   /* "LS"; not an IANA-registered ExID */

/* One point hit: a byte range of one flow (data direction) seen at one point. */
struct ls_event {
	__u64 ts_ns;          /* injected host clock (clock.h) */
	__u64 netns;          /* network namespace inode */
	__u8 saddr[16];       /* data sender; IPv4 in the first 4 bytes */
	__u8 daddr[16];
	__u32 seq;            /* TCP: sequence number of the range's first byte; UDP: hash */
	__u32 len;            /* bytes in the range */
	__u32 ifindex;
	__u32 cpu;
	__u32 wait_nagle;     /* with LS_F_WAIT: µs per cause (enum ls_wait, same order) */
	__u32 wait_cwnd;
	__u32 wait_rwnd;
	__u32 wait_sndbuf;
	__u32 wait_pacing;
	__u32 wait_other;
	__u32 wait_unread;
	__u32 wait_ooo;
	__u16 sport;          /* host byte order */
	__u16 dport;
	__u8 point;           /* enum ls_point */
	__u8 family;          /* 4 or 6 */
	__u8 proto;           /* IPPROTO_TCP or IPPROTO_UDP */
	__u8 flags;           /* LS_F_* */
	char dev[16];         /* device name, empty at socket points */
};

/* Per-flow counters (flow_stats.bpf.h): what a flow did at one place on one host, for every
 * byte and segment, not just the sampled ones. */
enum ls_fs_kind {
	LS_FS_SEND = 0,       /* app handed bytes to TCP (count: calls) */
	LS_FS_RECV = 1,       /* app read bytes (count: calls) */
	LS_FS_TX = 2,         /* device transmit, per ifindex: IP bytes, segments (GSO counted out) */
	LS_FS_RX = 3,         /* device receive, per ifindex */
	LS_FS_RETRANS = 4,    /* TCP resent: payload bytes, segments */
	LS_FS_DROP = 5,       /* freed as dropped (skb:kfree_skb, drops.bpf.c): IP bytes, skbs;
			       * ifindex holds the kernel's enum skb_drop_reason value */
};

struct ls_fs_key {
	__u8 saddr[16];       /* data direction, as ls_event */
	__u8 daddr[16];
	__u64 netns;
	__u32 ifindex;        /* device kinds; LS_FS_DROP: the kernel's skb_drop_reason */
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 kind;            /* enum ls_fs_kind */
	__u8 pad[5];
};

struct ls_fs_val {
	__u64 bytes;
	__u64 count;
	__u32 tgid;           /* LS_FS_SEND/RECV: the process of the CPU's last call (its owner) */
	__u32 pad;
};

/* The sampling in effect: the one value of the shared `sampling` array map, which the agent
 * changes while it runs (the stride level every host applies at the same time:
 * producers/stride_level.py). */
struct ls_sampling {
	__u32 size;           /* TCP: byte b is sampled when b % size == 0 */
	__u32 udp_mod;        /* UDP: a datagram is sampled when its hash % udp_mod == 0 */
};

#endif
