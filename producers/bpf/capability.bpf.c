/* Capability probes for `latscope doctor` only: hooks LatScope would use for tcp_tx where
 * the kernel allows them. Loading it tells whether fentry works here; nothing is emitted.
 * Hooks:
 *   fentry/__tcp_transmit_skb   the TCP transmit point (fentry; EPERM on this workplace)
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("fentry/__tcp_transmit_skb")
int BPF_PROG(tcp_tx_fentry, struct sock *sk, struct sk_buff *skb)
{
	return 0;
}
