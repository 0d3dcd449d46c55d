/* Socket points (TCP): the byte ranges an application hands over and receives, mapped to
 * absolute sequence numbers through tcp_sock.write_seq / copied_seq.
 * Hooks:
 *   sock_send  tp_btf/tcp_sendmsg_locked  (first firing per call) when the app handed the
 *              bytes over: remembered in the task's local storage, because TCP may transmit
 *              them before sendmsg returns
 *              tp_btf/sock_send_length    bytes [write_seq - ret, write_seq), stamped with
 *              the remembered entry time (its own time if there is none)
 *   sock_recv  tp_btf/sock_recv_length    bytes [copied_seq - ret, copied_seq) reach the app
 */
#include "common.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

#define MSG_PEEK 2
#define RCV_SHUTDOWN 1

/* When the current sendmsg started handing bytes to TCP, and write_seq then (checked against
 * the call's range, so an entry left by a path without sock_send_length, e.g. splice, is
 * never used for a later call). ts == 0: no call in progress. */
struct send_start_v {
	__u64 ts;
	__u32 seq;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct send_start_v);
} send_start SEC(".maps");

static __always_inline int sock_point(struct sock *sk, int ret, __u8 point)
{
	struct send_start_v start = {};
	struct ls_hit h;
	struct tcp_sock *tp;
	__u32 netns, end;

	if (ls_sk_protocol(sk) != IPPROTO_TCP)
		return 0;
	if (point == LS_SOCK_SEND) {
		struct send_start_v *v = bpf_task_storage_get(&send_start,
							      bpf_get_current_task_btf(), 0, 0);
		if (v) {
			start = *v;
			v->ts = 0;
		}
	}
	if (ret <= 0)
		return 0;
	netns = ls_sk_netns(sk);
	if (!ls_netns_ok(netns) || !ls_sk_ports_ok(sk))
		return 0;
	tp = bpf_skc_to_tcp_sock(sk);
	if (!tp)
		return 0;
	if (point == LS_SOCK_RECV) {
		end = tp->copied_seq;
		/* A read that consumed the peer's FIN advanced copied_seq past it (one sequence
		 * number, no data byte): the data ends one earlier. */
		if ((ls_sk_shutdown(sk) & RCV_SHUTDOWN) && end == tp->rcv_nxt)
			end--;
	} else {
		end = tp->write_seq;
	}
	if (!ls_sampled(end - (__u32)ret, ret))
		return 0;
	__builtin_memset(&h, 0, sizeof(h));
	if (ls_sk_flow(sk, &h, point == LS_SOCK_RECV))
		return 0;
	h.seq = end - (__u32)ret;
	h.len = ret;
	h.proto = IPPROTO_TCP;
	ls_emit(&h, point, start.ts && start.seq == h.seq ? start.ts : 0, netns, 0);
	return 0;
}

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(send_entry, const struct sock *sk)
{
	struct send_start_v *v;
	struct tcp_sock *tp;

	if (!ls_netns_ok(ls_sk_netns(sk)) || !ls_sk_ports_ok(sk))
		return 0;
	v = bpf_task_storage_get(&send_start, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!v || v->ts)
		return 0;            /* not the first chunk of this call */
	tp = bpf_skc_to_tcp_sock((void *)sk);
	if (!tp)
		return 0;
	v->ts = ls_now();
	v->seq = tp->write_seq;
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
