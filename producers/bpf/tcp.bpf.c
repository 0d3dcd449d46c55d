/* TCP points and retransmissions.
 * Hooks:
 *   tcp_rx   tp_btf/tcp_probe            TCP processing of a received segment (sk, skb)
 *   retrans  tp_btf/tcp_retransmit_skb   marks a range the sender retransmitted (not a point)
 * tcp_tx has no stable hook on this kernel (see producers/doctor.py).
 */
#include "common.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define TCPHDR_FIN 0x01
#define TCPHDR_SYN 0x02

static __always_inline int tcp_range(const struct sock *sk, const struct sk_buff *skb,
				     __u8 point, int rx)
{
	struct ls_tcp_range r;
	struct ls_hit h;
	__u32 netns, seq, end;

	/* The range first: most segments a bulk flow's sender receives are pure ACKs, and
	 * most data ranges hold no sampled byte; both leave before the map lookup. */
	if (ls_tcp_cb_range(skb, &r))
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
	netns = ls_sk_netns(sk);
	if (!ls_netns_ok(netns) || !ls_sk_ports_ok(sk))
		return 0;
	__builtin_memset(&h, 0, sizeof(h));
	if (ls_sk_flow(sk, &h, rx))
		return 0;
	h.seq = seq;
	h.len = end - seq;
	h.proto = IPPROTO_TCP;
	ls_emit(&h, point, 0, netns, 0);
	return 0;
}

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcp_rx, struct sock *sk, const struct sk_buff *skb)
{
	return tcp_range(sk, skb, LS_TCP_RX, 1);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(retrans, const struct sock *sk, const struct sk_buff *skb)
{
	return tcp_range(sk, skb, LS_RETRANS, 0);
}
