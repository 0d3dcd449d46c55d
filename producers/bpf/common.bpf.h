/* Maps, configuration and helpers shared by every LatScope probe object. The agent loads the
 * first object, then makes the others reuse its maps, so there is one ring buffer, one set of
 * counters and one filter per agent.
 *
 * Read modes. One point may be served by several hook variants (schemas/points.py): typed
 * ones (tp_btf, fentry/fexit, netfilter) read kernel memory with plain loads the verifier
 * checks through BTF; untyped ones (raw_tp, kprobe) get bare addresses and must read through
 * bpf_probe_read_kernel (BPF_CORE_READ). Helpers that read kernel structs take the mode as a
 * compile-time constant `m` (LS_BTF or LS_RAW); every caller is __always_inline, so each
 * variant compiles to straight code of its own mode and the typed path keeps its plain loads. */
#ifndef LATSCOPE_COMMON_BPF_H
#define LATSCOPE_COMMON_BPF_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "latscope.h"
#include "clock.h"
#include "compat.h"

#define AF_INET 2
#define AF_INET6 10
#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17

#define LS_BTF 0
#define LS_RAW 1
/* src->a->b... in mode m (libbpf's ___arrow spells the plain chain BPF_CORE_READ reads). */
#define LS_RD(m, src, a, ...) \
	((m) == LS_RAW ? BPF_CORE_READ(src, a, ##__VA_ARGS__) : ___arrow(src, a, ##__VA_ARGS__))

/* Set by the loader before load. */
volatile const __u32 wakeup_bytes = 1 << 20; /* unread bytes that wake the agent */
volatile const __u8 netns_any = 0;          /* 1: skip the netns filter (single-host use) */
volatile const __u8 ports_any = 1;          /* 1: no port allow-list */
volatile const __u8 resend_mark = 0;        /* 1: tcp_tx writes the resend mark (tcp_tx.bpf.c) */
/* Port allow-list as a bitmap (bit p set: port p allowed), used when ports_any == 0: one
 * load instead of two hash lookups on every packet. */
volatile const __u32 port_bits[2048] = {};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 22);
} events SEC(".maps");

/* What is sampled (struct ls_sampling), set by the agent before it attaches and changed
 * while it runs; zero (never set): nothing is. An array lookup with a constant key, which
 * the verifier inlines: no helper call. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ls_sampling);
} sampling SEC(".maps");

static __always_inline const struct ls_sampling *ls_sampling(void)
{
	__u32 k = 0;

	return bpf_map_lookup_elem(&sampling, &k);
}

/* Non-zero while the agent sleeps long, having nothing to group (producers/agent.py): each
 * event then wakes it (ls_emit_one), where it would otherwise wait for a batch or its
 * timeout. An array lookup with a constant key, inlined like the sampling's. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} agent_idle SEC(".maps");


#define LS_NCOUNTERS LS_C_MAX
#include "counters.bpf.h"

/* Network namespaces (inodes) this agent covers: tracepoints are global, so on one machine
 * every agent sees every namespace's packets and must keep only its own. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u8);
} netns_filter SEC(".maps");

/* The same namespaces as constants when there are few (the common case): a packet's
 * namespace is compared in registers, without a map lookup on every packet. */
volatile const __u32 netns_fast[LS_NETNS_FAST] = {};
/* How many of netns_fast hold namespaces; more than LS_NETNS_FAST (so when the loader
 * sets nothing): the netns_filter map decides. */
volatile const __u32 netns_fast_n = 0xffffffff;

static __always_inline int ls_netns_ok(__u32 inum)
{
	if (netns_any)
		return 1;
	if (netns_fast_n > LS_NETNS_FAST)
		return bpf_map_lookup_elem(&netns_filter, &inum) != 0;
	for (int i = 0; i < LS_NETNS_FAST; i++) {
		if (i >= netns_fast_n)
			return 0;
		if (netns_fast[i] == inum)
			return 1;
	}
	return 0;
}

static __always_inline int ls_ports_ok(__u16 sport, __u16 dport)
{
	return ports_any || (port_bits[(sport >> 5) & 2047] & (1U << (sport & 31))) ||
	       (port_bits[(dport >> 5) & 2047] & (1U << (dport & 31)));
}

static __always_inline int ls_sk_ports_ok(const struct sock *sk, const int m)
{
	return ports_any || ls_ports_ok(LS_RD(m, sk, __sk_common.skc_num),
					bpf_ntohs(LS_RD(m, sk, __sk_common.skc_dport)));
}

/* How far from seq the first byte b >= seq with b % size == 0 lies (size > 0). */
static __always_inline __u32 ls_to_sampled(__u32 seq, __u32 size)
{
	__u32 off = seq % size;

	return off ? size - off : 0;
}

/* Does [seq, seq+len) (mod 2^32) hold a byte b with b % size == 0? One division. */
static __always_inline int ls_sampled(__u32 seq, __u32 len)
{
	const struct ls_sampling *s = ls_sampling();
	__u32 size = s ? s->size : 0;

	if (!len || !size)
		return 0;
	return ls_to_sampled(seq, size) < len || (__u64)seq + len > 0x100000000ULL;
}

/* The flow and range of one hit, filled by the point, emitted by ls_emit. */
struct ls_hit {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 seq;
	__u32 len;
	__u32 resent_end;      /* with LS_F_RESENT (latscope.h) */
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 proto;
	__u8 flags;
};

/* The UDP socket call the current task is in (udp_sock.bpf.h), in task storage: shared by
 * every object because the send point is emitted at ip_out (netfilter.bpf.c) and the call
 * is known at the syscall's entry (sock.bpf.c). sk == 0: none. */
struct ls_udp_call {
	__u64 send_sk;         /* sendto/sendmsg/sendmmsg/write(v): the fd's UDP socket */
	__u64 send_ts;         /* when the call entered */
	__u64 recv_sk;         /* recvfrom/recvmsg/recvmmsg/read(v): the fd's UDP socket */
	__u64 recv_skb;        /* the datagram the read takes: its queue's head at entry */
	struct ls_hit rx;      /* that datagram's flow and hash (valid when recv_skb) */
	__u8 send_multi;       /* sendmmsg: stays armed for every message of the call */
	__u8 recv_multi;       /* recvmmsg: the next head is looked up after each message */
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct ls_udp_call);
} udp_call SEC(".maps");

static __always_inline void ls_emit_one(const struct ls_hit *h, __u8 point, __u64 ts,
					__u32 netns, const struct net_device *dev, __u32 ifindex,
					const __u32 *wait)
{
	struct ls_event *e;
	const __u32 *idle;
	__u32 k = 0;

	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		ls_count(LS_C_RB_DROPS);
		return;
	}
	e->ts_ns = ts;
	e->netns = netns;
	__builtin_memcpy(e->saddr, h->saddr, 16);
	__builtin_memcpy(e->daddr, h->daddr, 16);
	e->seq = h->seq;
	e->len = h->len;
	e->sport = h->sport;
	e->dport = h->dport;
	e->point = point;
	e->family = h->family;
	e->proto = h->proto;
	e->flags = h->flags;
	if (wait) {                   /* socket-wait causes (wait.bpf.h), a constant NULL else */
		e->flags |= LS_F_WAIT;
		e->wait_nagle = wait[LS_W_NAGLE];
		e->wait_cwnd = wait[LS_W_CWND];
		e->wait_rwnd = wait[LS_W_RWND];
		e->wait_sndbuf = wait[LS_W_SNDBUF];
		e->wait_pacing = wait[LS_W_PACING];
		e->wait_other = wait[LS_W_OTHER];
		e->wait_unread = wait[LS_W_UNREAD];
		e->wait_ooo = wait[LS_W_OOO];
	} else {
		e->wait_nagle = e->wait_cwnd = e->wait_rwnd = e->wait_sndbuf = 0;
		e->wait_pacing = e->wait_other = e->wait_unread = e->wait_ooo = 0;
	}
	e->cpu = bpf_get_smp_processor_id();
	e->ifindex = ifindex;
	if (dev)
		bpf_probe_read_kernel_str(e->dev, sizeof(e->dev), dev->name);
	else
		e->dev[0] = 0;            /* socket points; XDP: user space names the device */
	/* Wake the agent only once a batch waits (it also reads on its own every poll): a
	 * wakeup per event costs the traced path an irq_work and the agent a read each. */
	bpf_ringbuf_submit(e, bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) >= wakeup_bytes ?
			      BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP);
	ls_count(LS_C_HITS);
	/* An agent in a long sleep is woken now, by an empty record it skips. The flag is
	 * read after the commit, a full fence, and the agent reads the ring's producer
	 * position after setting it (ring_pending, also after a fence): either it saw this
	 * record and did not sleep, or this sees its flag. */
	idle = bpf_map_lookup_elem(&agent_idle, &k);
	if (idle && *idle) {
		void *w = bpf_ringbuf_reserve(&events, 8, 0);

		if (w)
			bpf_ringbuf_discard(w, BPF_RB_FORCE_WAKEUP);
	}
}

/* ts == 0: stamp now. Points stamp only once they know the range holds a sampled byte, so
 * the unsampled path never reads the clock (a few hundred ns after the hook's entry).
 * dev: where the device's name is read from (address only); ifindex: the caller's.
 * A marked range whose mark ends inside it (latscope.h: a retry that took in bytes never
 * sent) is reported as two ranges: the resent part, and the first copies after it. */
static __always_inline void ls_emit_at_w(const struct ls_hit *h, __u8 point, __u64 ts,
					 __u32 netns, const struct net_device *dev, __u32 ifindex,
					 const __u32 *wait)
{
	__s32 head = (__s32)(h->resent_end - h->seq);   /* resent bytes at the range's start */

	if (!ts)
		ts = ls_now();
	if ((h->flags & LS_F_RESENT) && head < (__s32)h->len) {
		struct ls_hit part = *h;

		if (head > 0 && ls_sampled(h->seq, head)) {
			part.len = head;
			ls_emit_one(&part, point, ts, netns, dev, ifindex, 0);
		}
		if (head < 0)
			head = 0;
		part.seq = h->seq + head;
		part.len = h->len - head;
		part.flags &= ~LS_F_RESENT;
		/* the causes belong to the first copy of the tracked byte: the first-copy part */
		if (ls_sampled(part.seq, part.len))
			ls_emit_one(&part, point, ts, netns, dev, ifindex, wait);
		return;
	}
	ls_emit_one(h, point, ts, netns, dev, ifindex, wait);
}

static __always_inline void ls_emit_at(const struct ls_hit *h, __u8 point, __u64 ts,
				       __u32 netns, const struct net_device *dev, __u32 ifindex)
{
	ls_emit_at_w(h, point, ts, netns, dev, ifindex, 0);
}

static __always_inline void ls_emit(const struct ls_hit *h, __u8 point, __u64 ts, __u32 netns,
				    const struct net_device *dev, const int m)
{
	ls_emit_at(h, point, ts, netns, dev, dev ? LS_RD(m, dev, ifindex) : 0);
}

/* Fill family and addresses from a socket; reversed for the receive direction. A v4-mapped
 * IPv6 socket reports the IPv4 flow, as the packets on the wire do. */
static __always_inline int ls_sk_flow(const struct sock *sk, struct ls_hit *h, int rx,
				      const int m)
{
	__u16 fam = LS_RD(m, sk, __sk_common.skc_family);
	__u32 *local = (__u32 *)(rx ? h->daddr : h->saddr);
	__u32 *remote = (__u32 *)(rx ? h->saddr : h->daddr);
	__u16 lport = LS_RD(m, sk, __sk_common.skc_num);
	__u16 rport = bpf_ntohs(LS_RD(m, sk, __sk_common.skc_dport));

	h->sport = rx ? rport : lport;
	h->dport = rx ? lport : rport;
	if (fam == AF_INET) {
		h->family = 4;
		local[0] = LS_RD(m, sk, __sk_common.skc_rcv_saddr);
		remote[0] = LS_RD(m, sk, __sk_common.skc_daddr);
		return 0;
	}
	if (fam != AF_INET6)
		return -1;
	bpf_probe_read_kernel(local, 16, &sk->__sk_common.skc_v6_rcv_saddr);
	bpf_probe_read_kernel(remote, 16, &sk->__sk_common.skc_v6_daddr);
	if (remote[0] == 0 && remote[1] == 0 && remote[2] == bpf_htonl(0xffff)) {
		h->family = 4;
		local[0] = local[3];
		remote[0] = remote[3];
		local[2] = local[3] = remote[2] = remote[3] = 0;
		return 0;
	}
	h->family = 6;
	return 0;
}

static __always_inline __u32 ls_sk_netns(const struct sock *sk, const int m)
{
	return LS_RD(m, sk, __sk_common.skc_net.net, ns.inum);
}

/* Does the TCP option area at opts (n bytes: doff * 4 - 20) hold the resend mark
 * (latscope.h)? Its end goes to *end. Walks the options as TCP does; only called for a
 * sampled segment. */
static __always_inline int ls_opt_resent(const unsigned char *opts, __u32 n, __u32 *end)
{
	__u8 o[64];                              /* 40 bytes of options; indexes masked by 63 */
	__u32 i = 0;

	if (n < LS_OPT_LEN)
		return 0;
	if (n > 40)
		n = 40;
	__builtin_memset(o, 0, sizeof(o));
	if (bpf_probe_read_kernel(o, n, opts))
		return 0;
	for (int k = 0; k < 40; k++) {          /* each step eats >= 1 byte of <= 40 */
		__u8 kind, len;

		if (i + LS_OPT_LEN > n)
			return 0;                /* no room left for the mark */
		kind = o[i & 63];
		if (kind == 0)                   /* end of options */
			return 0;
		if (kind == 1) {                 /* NOP */
			i++;
			continue;
		}
		len = o[(i + 1) & 63];
		if (kind == LS_OPT_KIND && len == LS_OPT_LEN &&
		    o[(i + 2) & 63] == (LS_OPT_EXID >> 8) && o[(i + 3) & 63] == (LS_OPT_EXID & 0xff)) {
			*end = (__u32)o[(i + 4) & 63] << 24 | (__u32)o[(i + 5) & 63] << 16 |
			       (__u32)o[(i + 6) & 63] << 8 | o[(i + 7) & 63];
			return 1;
		}
		if (len < 2)
			return 0;                /* malformed */
		i += len;
	}
	return 0;
}

/* The resend mark of a TCP header at th (doff: its length in 32-bit words) into h's flags
 * and resent_end. */
static __always_inline void ls_tcp_mark(const unsigned char *th, __u8 doff, struct ls_hit *h)
{
	const __u32 base = sizeof(struct tcphdr);
	__u32 end = 0;

	h->flags = doff > 5 && ls_opt_resent(th + base, doff * 4 - base, &end) ? LS_F_RESENT : 0;
	h->resent_end = end;
}

/* FNV-1a over the bytes that identify a UDP datagram on every hop. */
static __always_inline __u32 ls_fnv(__u32 h, const __u8 *p, int n)
{
	for (int i = 0; i < 16 && i < n; i++)
		h = (h ^ p[i]) * 16777619U;
	return h;
}

/* A UDP datagram's identity on every hop (LS_F_UDP: the hit's seq): FNV-1a over the UDP
 * length (network order, as in the header) and the first 16 payload bytes, as far as the
 * linear data at payload holds them (n bytes), then murmur3's finaliser (FNV's low bits are
 * too regular for a modulus). Every point that knows a datagram computes it here. */
static __always_inline __u32 ls_udp_hash(__be16 ulen, const unsigned char *payload, __u32 n)
{
	__u8 b[16] = {};
	__u32 hash = 2166136261U;

	if (n > 16)
		n = 16;
	if (n > 0 && bpf_probe_read_kernel(b, sizeof(b), payload))
		n = 0;
	hash = ls_fnv(hash, (__u8 *)&ulen, 2);
	hash = ls_fnv(hash, b, n);
	hash ^= hash >> 16;
	hash *= 0x85ebca6bU;
	hash ^= hash >> 13;
	hash *= 0xc2b2ae35U;
	hash ^= hash >> 16;
	return hash;
}

/* Where ls_parse_flow left the L4 header: its offset from head, the TCP header's length in
 * words, the UDP length (network order). */
struct ls_l4 {
	__u32 off;
	__be16 ulen;
	__u8 doff;
};

/* Kernel memory as a typed, read-only pointer: its loads are plain loads the JIT makes
 * fault-safe (a fault reads zero), where bpf_probe_read_kernel costs a helper call and its
 * checks on every packet. Kernel 6.2+. */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define LS_CAST(p, type) ((const type *)bpf_rdonly_cast((p), bpf_core_type_id_kernel(type)))

/* Parse the IP/TCP/UDP headers of a packet whose network header starts at head+nh, whose
 * data ends at head+end and whose linear part at head+linear_end (head may be an skb's head
 * or an XDP packet's data: both are kernel memory, read through LS_CAST). Returns 1 for a
 * TCP segment carrying data or a UDP datagram, of an allowed port, with h's flow and range
 * filled (UDP: seq is the datagram's hash, len 1) and l the L4 header's; 0 otherwise.
 * Whether it is sampled is ls_parse_sampled's question: the flow counters count them all. */
static __always_inline int ls_parse_flow(unsigned char *head, __u32 nh, __u32 end,
					 __u32 linear_end, __u16 l3proto, struct ls_hit *h,
					 struct ls_l4 *l)
{
	__u32 l4;
	__u8 proto;

	if (l3proto == bpf_htons(ETH_P_IP)) {
		const struct iphdr *ip = LS_CAST(head + nh, struct iphdr);

		proto = ip->protocol;
		if (ip->frag_off & bpf_htons(0x1fff))
			return 0;          /* non-first fragment: no L4 header */
		l4 = nh + BPF_CORE_READ_BITFIELD(ip, ihl) * 4;
		h->family = 4;
		__builtin_memset(h->saddr, 0, 32);
		*(__u32 *)h->saddr = ip->saddr;
		*(__u32 *)h->daddr = ip->daddr;
	} else if (l3proto == bpf_htons(ETH_P_IPV6)) {
		const struct ipv6hdr *ip6 = LS_CAST(head + nh, struct ipv6hdr);
		__u32 *s = (__u32 *)h->saddr, *d = (__u32 *)h->daddr;

		proto = ip6->nexthdr;
		l4 = nh + sizeof(*ip6);
		h->family = 6;
		for (int i = 0; i < 4; i++) {
			s[i] = ip6->saddr.in6_u.u6_addr32[i];
			d[i] = ip6->daddr.in6_u.u6_addr32[i];
		}
	} else {
		return 0;
	}
	if (h->family == 6 && proto != IPPROTO_TCP && proto != IPPROTO_UDP) {
		/* Walk up to 4 IPv6 extension headers (hop-by-hop 0, routing 43, fragment 44,
		 * destination options 60); a longer chain is counted as unparsed. */
		for (int i = 0; i < 4; i++) {
			__u8 ext[4];
			if (proto != 0 && proto != 43 && proto != 44 && proto != 60)
				break;
			if (bpf_probe_read_kernel(ext, sizeof(ext), head + l4))
				goto bad;
			if (proto == 44) {
				if (((ext[2] << 8) | ext[3]) & 0xfff8)
					return 0;  /* non-first fragment: no L4 header */
				l4 += 8;
			} else {
				l4 += (ext[1] + 1) * 8;
			}
			proto = ext[0];
		}
		if (proto == 0 || proto == 43 || proto == 44 || proto == 60)
			goto bad;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	l->off = l4;

	if (proto == IPPROTO_TCP) {
		const struct tcphdr *t = LS_CAST(head + l4, struct tcphdr);
		__u32 data;

		h->sport = bpf_ntohs(t->source);
		h->dport = bpf_ntohs(t->dest);
		if (!ls_ports_ok(h->sport, h->dport))
			return 0;
		l->doff = BPF_CORE_READ_BITFIELD(t, doff);
		data = l4 + l->doff * 4;
		if (data >= end)
			return 0;          /* pure ACK */
		h->seq = bpf_ntohl(t->seq);
		h->len = end - data;
		h->proto = IPPROTO_TCP;
		h->flags = 0;
		h->resent_end = 0;
		return 1;
	}
	{
		const struct udphdr *u = LS_CAST(head + l4, struct udphdr);

		h->sport = bpf_ntohs(u->source);
		h->dport = bpf_ntohs(u->dest);
		if (!ls_ports_ok(h->sport, h->dport))
			return 0;
		l->ulen = u->len;
		h->seq = ls_udp_hash(l->ulen, head + l4 + 8,
				      linear_end > l4 + 8 ? linear_end - (l4 + 8) : 0);
		h->len = 1;
		h->proto = IPPROTO_UDP;
		h->flags = LS_F_UDP;
		h->resent_end = 0;
		return 1;
	}
bad:
	ls_count(LS_C_UNPARSED);
	return 0;
}

/* Is the datagram with this hash (ls_udp_hash) sampled? */
static __always_inline int ls_udp_sampled(__u32 hash)
{
	const struct ls_sampling *s = ls_sampling();
	__u32 mod = s ? s->udp_mod : 0;

	return mod && !(hash % mod);
}

/* Is the packet ls_parse_flow read sampled? TCP: its range holds a sampled byte (then its
 * resend mark is read); UDP: its hash falls in the sample. */
static __always_inline int ls_parse_sampled(unsigned char *head, struct ls_hit *h,
					    const struct ls_l4 *l)
{
	if (h->proto == IPPROTO_UDP)
		return ls_udp_sampled(h->seq);
	if (!ls_sampled(h->seq, h->len))
		return 0;
	ls_tcp_mark(head + l->off, l->doff, h);
	return 1;
}

/* ls_parse_flow, then ls_parse_sampled: 1 if the packet holds a sampled byte or is a
 * sampled datagram, of an allowed port, with h filled; 0 otherwise. */
static __always_inline int ls_parse(unsigned char *head, __u32 nh, __u32 end, __u32 linear_end,
				    __u16 l3proto, struct ls_hit *h)
{
	struct ls_l4 l;

	return ls_parse_flow(head, nh, end, linear_end, l3proto, h, &l) &&
	       ls_parse_sampled(head, h, &l);
}

/* ls_parse_flow on an skb whose network header is at head+nh (head: skb->head). */
static __always_inline int ls_skb_flow(const struct sk_buff *skb, __u32 nh, __u16 l3proto,
				       struct ls_hit *h, struct ls_l4 *l, const int m)
{
	unsigned char *head = LS_RD(m, skb, head);
	__u32 end = (__u32)((unsigned long)LS_RD(m, skb, data) - (unsigned long)head) +
		    LS_RD(m, skb, len);

	return ls_parse_flow(head, nh, end, end - LS_RD(m, skb, data_len), l3proto, h, l);
}

static __always_inline int ls_parse_skb(const struct sk_buff *skb, __u32 nh, __u16 l3proto,
					struct ls_hit *h, const int m)
{
	struct ls_l4 l;

	return ls_skb_flow(skb, nh, l3proto, h, &l, m) &&
	       ls_parse_sampled(LS_RD(m, skb, head), h, &l);
}

#include "flow_stats.bpf.h"
#include "wait.bpf.h"

#endif
