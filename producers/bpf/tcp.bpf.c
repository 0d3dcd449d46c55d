/* TCP receive point and retransmissions. Each variant is a thin entry into tcp.bpf.h;
 * schemas/points.py orders them and the agent attaches the first the kernel has.
 * Hooks:
 *   tcp_rx   tp_btf/tcp_probe              TCP processing of a received segment (sk, skb)
 *            raw_tp/tcp_probe
 *   retrans  tp_btf/tcp_retransmit_skb     marks a range the sender retransmitted (not a point)
 *            raw_tp/tcp_retransmit_skb     retrans_sent: kernels whose tracepoint also fires
 *                                          for attempts that sent nothing (its err argument,
 *                                          < 0: -EBUSY while the original is still queued in
 *                                          the host, -ENOMEM, -EAGAIN) keep only the resends
 *                                          TCP handed on (err >= 0; > 0: a local qdisc
 *                                          dropped it after it passed the points); retrans:
 *                                          older kernels, which fire only for those.
 *                                          Where tcp_tx's sock_ops hook marks resent
 *                                          segments (latscope.h), this adds nothing.
 *                                          The flow counters (flow_stats.bpf.h) count
 *                                          what the kernel's tcpi_total_retrans counts:
 *                                          those, and the resends a local qdisc refused
 *                                          (-ENOBUFS: counted before the transmit).
 * tcp_tx lives in tcp_tx.bpf.c; function-hook variants of both points in tcp_fn.bpf.c.
 */
#include "tcp.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcp_rx, struct sock *sk, const struct sk_buff *skb)
{
	return tcp_range(sk, skb, LS_TCP_RX, 1, LS_BTF);
}

SEC("raw_tp/tcp_probe")
int tcp_rx_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return tcp_range((void *)ctx->args[0], (void *)ctx->args[1], LS_TCP_RX, 1, LS_RAW);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(retrans_sent, const struct sock *sk, const struct sk_buff *skb, int err)
{
	if (err >= 0 || err == -ENOBUFS)
		tcp_count_retrans(sk, skb, LS_BTF);
	if (err < 0)
		return 0;
	return tcp_range(sk, skb, LS_RETRANS, 0, LS_BTF);
}

SEC("raw_tp/tcp_retransmit_skb")
int retrans_sent_raw(struct bpf_raw_tracepoint_args *ctx)
{
	int err = (int)ctx->args[2];

	if (err >= 0 || err == -ENOBUFS)
		tcp_count_retrans((void *)ctx->args[0], (void *)ctx->args[1], LS_RAW);
	if (err < 0)
		return 0;
	return tcp_range((void *)ctx->args[0], (void *)ctx->args[1], LS_RETRANS, 0, LS_RAW);
}

SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(retrans, const struct sock *sk, const struct sk_buff *skb)
{
	tcp_count_retrans(sk, skb, LS_BTF);
	return tcp_range(sk, skb, LS_RETRANS, 0, LS_BTF);
}

SEC("raw_tp/tcp_retransmit_skb")
int retrans_raw(struct bpf_raw_tracepoint_args *ctx)
{
	tcp_count_retrans((void *)ctx->args[0], (void *)ctx->args[1], LS_RAW);
	return tcp_range((void *)ctx->args[0], (void *)ctx->args[1], LS_RETRANS, 0, LS_RAW);
}
