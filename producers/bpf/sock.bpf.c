/* Socket points (TCP): the byte ranges an application hands over and receives, mapped to
 * absolute sequence numbers through tcp_sock.write_seq / copied_seq.
 * Hooks:
 *   sock_send  tp_btf/sock_send_length  bytes [write_seq - ret, write_seq)
 *   sock_recv  tp_btf/sock_recv_length  bytes [copied_seq - ret, copied_seq)
 */
#include "common.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define MSG_PEEK 2

static __always_inline int sock_point(struct sock *sk, int ret, __u8 point)
{
	struct ls_hit h = {};
	__u64 ts = ls_now();
	__u32 netns, end;

	if (ret <= 0 || ls_sk_protocol(sk) != IPPROTO_TCP)
		return 0;
	netns = ls_sk_netns(sk);
	if (!ls_netns_ok(netns))
		return 0;
	if (ls_sk_flow(sk, &h, point == LS_SOCK_RECV))
		return 0;
	if (!ls_ports_ok(h.sport, h.dport))
		return 0;
	ls_count(LS_C_SEEN);
	if (point == LS_SOCK_RECV)
		end = BPF_CORE_READ((struct tcp_sock *)sk, copied_seq);
	else
		end = BPF_CORE_READ((struct tcp_sock *)sk, write_seq);
	h.seq = end - (__u32)ret;
	h.len = ret;
	h.proto = IPPROTO_TCP;
	if (ls_sampled(h.seq, h.len))
		ls_emit(&h, point, ts, netns, 0);
	return 0;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send, struct sock *sk, int ret, int flags)
{
	return sock_point(sk, ret, LS_SOCK_SEND);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv, struct sock *sk, int ret, int flags)
{
	if (flags & MSG_PEEK)
		return 0;
	return sock_point(sk, ret, LS_SOCK_RECV);
}
