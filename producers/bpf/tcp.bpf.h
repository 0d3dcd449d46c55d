/* TCP range logic: the byte range of a segment from TCP's control block, shared by every
 * variant of tcp_rx and the retransmission marker (tcp.bpf.c) and by tcp_tx's fentry/kprobe
 * variants (tcp_fn.bpf.c). tcp_rx also reports the segment's resend mark (latscope.h).
 * m: read mode (common.bpf.h), a constant per variant. */
#ifndef LATSCOPE_TCP_BPF_H
#define LATSCOPE_TCP_BPF_H

#include "common.bpf.h"

#define TCPHDR_FIN 0x01
#define TCPHDR_SYN 0x02
#define ENOBUFS 105

/* The receiver tracks the segment's first sampled byte (from seq) until the read that hands
 * it to the app (wait.bpf.h), if it has a free slot and the byte is not a copy it has. */
static __always_inline void tcp_rx_track(const struct sock *sk, __u32 seq)
{
	struct ls_wait_st *w;
	struct tcp_sock *tp = bpf_skc_to_tcp_sock((void *)sk);
	__u32 b = ls_first_sampled(seq);

	if (!tp || (__s32)(b - tp->rcv_nxt) < 0)
		return;
	w = bpf_sk_storage_get(&sock_wait, (void *)sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!w)
		return;
	/* this segment's event stepped the others to its start: the new byte starts there */
	ls_wait_start(w->r, &w->r_last, b, w->r_last ? w->r_last : bpf_ktime_get_ns());
}

static __always_inline int tcp_range(const struct sock *sk, const struct sk_buff *skb,
				     __u8 point, int rx, const int m)
{
	struct ls_tcp_range r;
	struct ls_hit h;
	__u32 netns, seq, end;

	/* Every received segment (a pure ACK too) is an event for a byte the socket tracks
	 * (wait.bpf.h): tcp_probe fires before TCP processes it, so the state read is the one
	 * that held since the previous event. Typed hooks only (socket storage). */
	if (rx && m == LS_BTF)
		ls_wait_event((void *)sk);
	/* The range first: most segments a bulk flow's sender receives are pure ACKs, and
	 * most data ranges hold no sampled byte; both leave before the map lookup. */
	if (ls_tcp_cb_range(skb, &r, m))
		return 0;
	seq = r.seq;
	end = r.end_seq;
	/* SYN and FIN each take one sequence number but carry no data byte. */
	if (r.flags & TCPHDR_SYN)
		seq++;
	if (r.flags & TCPHDR_FIN)
		end--;
	if ((__s32)(end - seq) <= 0 || !ls_sampled(seq, end - seq))
		return 0;
	netns = ls_sk_netns(sk, m);
	if (!ls_netns_ok(netns) || !ls_sk_ports_ok(sk, m))
		return 0;
	__builtin_memset(&h, 0, sizeof(h));
	if (ls_sk_flow(sk, &h, rx, m))
		return 0;
	h.seq = seq;
	h.len = end - seq;
	h.proto = IPPROTO_TCP;
	if (rx) {
		/* Where TCP receives a segment, skb->data is its TCP header: the resend mark. */
		unsigned char *th = LS_RD(m, skb, data);

		ls_tcp_mark(th, BPF_CORE_READ_BITFIELD(LS_CAST(th, struct tcphdr), doff), &h);
	}
	if (rx && m == LS_BTF)
		tcp_rx_track(sk, seq);
	ls_emit(&h, point, 0, netns, 0, m);
	return 0;
}

/* A resend's flow counters (flow_stats.bpf.h): its payload bytes and its segments, as the
 * kernel's tcpi_total_retrans and TcpRetransSegs count them (tcp_skb_pcount, from the
 * control block). */
static __always_inline int tcp_count_retrans(const struct sock *sk, const struct sk_buff *skb,
					     const int m)
{
	struct ls_tcp_range r;
	struct ls_hit h;
	__u32 netns;

	if (ls_tcp_cb_range(skb, &r, m))
		return 0;
	netns = ls_sk_netns(sk, m);
	if (!ls_netns_ok(netns) || !ls_sk_ports_ok(sk, m))
		return 0;
	__builtin_memset(&h, 0, sizeof(h));
	if (ls_sk_flow(sk, &h, 0, m))
		return 0;
	h.proto = IPPROTO_TCP;
	ls_fs_add(&h, netns, 0, LS_FS_RETRANS, r.end_seq - r.seq, r.segs ? r.segs : 1);
	return 0;
}

#endif
