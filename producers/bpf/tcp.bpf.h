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

static __always_inline int tcp_range(const struct sock *sk, const struct sk_buff *skb,
				     __u8 point, int rx, const int m)
{
	struct ls_tcp_range r;
	struct ls_hit h;
	__u32 netns, seq, end;

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
		struct tcphdr t;

		if (!bpf_probe_read_kernel(&t, sizeof(t), th))
			ls_tcp_mark(th, &t, &h);
	}
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
