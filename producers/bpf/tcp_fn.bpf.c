/* TCP points at kernel functions: tcp_rx where tcp_probe serves neither as tp_btf nor as
 * raw_tp, and tcp_tx where sock_ops header-option callbacks are refused. Kept out of
 * tcp.bpf.c / tcp_tx.bpf.c because a kernel that refuses one of these (fentry needs BPF
 * trampolines, kprobes CONFIG_KPROBES) must still load those objects whole. Thin entries
 * into tcp.bpf.h (the range from TCP's control block); schemas/points.py orders them.
 * Hooks:
 *   tcp_rx  fentry/tcp_rcv_established   where tcp_probe fires (its first statement)
 *           kprobe/tcp_rcv_established
 *   tcp_tx  fentry/__tcp_transmit_skb    TCP hands a built segment towards IP
 *           kprobe/__tcp_transmit_skb
 */
#include "tcp.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("fentry/tcp_rcv_established")
int BPF_PROG(tcp_rx_fentry, struct sock *sk, struct sk_buff *skb)
{
	return tcp_range(sk, skb, LS_TCP_RX, 1, LS_BTF);
}

SEC("kprobe/tcp_rcv_established")
int BPF_KPROBE(tcp_rx_kprobe, struct sock *sk, struct sk_buff *skb)
{
	return tcp_range(sk, skb, LS_TCP_RX, 1, LS_RAW);
}

SEC("fentry/__tcp_transmit_skb")
int BPF_PROG(tcp_tx_fentry, struct sock *sk, struct sk_buff *skb)
{
	return tcp_range(sk, skb, LS_TCP_TX, 0, LS_BTF);
}

SEC("kprobe/__tcp_transmit_skb")
int BPF_KPROBE(tcp_tx_kprobe, struct sock *sk, struct sk_buff *skb)
{
	return tcp_range(sk, skb, LS_TCP_TX, 0, LS_RAW);
}
