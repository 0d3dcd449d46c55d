/* Socket point logic (sock_send, sock_recv and sock_send's entry time), shared by every hook
 * variant in sock.bpf.c. m: read mode (common.bpf.h), a constant per variant. TCP here; a
 * UDP socket's calls end in udp_sock.bpf.h. */
#ifndef LATSCOPE_SOCK_BPF_H
#define LATSCOPE_SOCK_BPF_H

#include "common.bpf.h"
#include "udp_sock.bpf.h"

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

/* The socket's tcp_sock (sk is a full socket of protocol TCP where this is called): the
 * checked helper in typed mode, a plain cast where only probe reads follow. */
static __always_inline struct tcp_sock *ls_tcp_sk(const struct sock *sk, const int m)
{
	return m == LS_RAW ? (struct tcp_sock *)sk : bpf_skc_to_tcp_sock((void *)sk);
}

static __always_inline int sock_point(struct sock *sk, int ret, __u8 point, const int m)
{
	struct send_start_v start = {};
	struct ls_hit h;
	struct tcp_sock *tp;
	__u32 netns, end;

	__u16 proto = ls_sk_protocol(sk, m);

	if (proto == IPPROTO_UDP)        /* udp_sock.bpf.h: the call the task is in ends */
		return point == LS_SOCK_SEND ? udp_send_done(sk) : udp_recv_done(sk, ret, m);
	if (proto != IPPROTO_TCP)
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
	netns = ls_sk_netns(sk, m);
	if (!ls_netns_ok(netns) || !ls_sk_ports_ok(sk, m))
		return 0;
	tp = ls_tcp_sk(sk, m);
	if (!tp)
		return 0;
	if (point == LS_SOCK_RECV) {
		end = LS_RD(m, tp, copied_seq);
		/* A read that consumed the peer's FIN advanced copied_seq past it (one sequence
		 * number, no data byte): the data ends one earlier. */
		if ((ls_sk_shutdown(sk, m) & RCV_SHUTDOWN) && end == LS_RD(m, tp, rcv_nxt))
			end--;
	} else {
		end = LS_RD(m, tp, write_seq);
	}
	__builtin_memset(&h, 0, sizeof(h));
	if (ls_sk_flow(sk, &h, point == LS_SOCK_RECV, m))
		return 0;
	h.proto = IPPROTO_TCP;
	/* every call, sampled or not: the flow's app bytes (flow_stats.bpf.h) */
	ls_fs_add(&h, netns, 0, point == LS_SOCK_RECV ? LS_FS_RECV : LS_FS_SEND, ret, 1);
	if (!ls_sampled(end - (__u32)ret, ret))
		return 0;
	h.seq = end - (__u32)ret;
	h.len = ret;
	ls_emit(&h, point, start.ts && start.seq == h.seq ? start.ts : 0, netns, 0, m);
	return 0;
}

/* sock_send's entry time: the first firing per sendmsg call remembers when, and write_seq. */
static __always_inline int send_start_mark(const struct sock *sk, const int m)
{
	struct send_start_v *v;
	struct tcp_sock *tp;

	if (!ls_netns_ok(ls_sk_netns(sk, m)) || !ls_sk_ports_ok(sk, m))
		return 0;
	v = bpf_task_storage_get(&send_start, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!v || v->ts)
		return 0;            /* not the first chunk of this call */
	tp = ls_tcp_sk(sk, m);
	if (!tp)
		return 0;
	v->ts = ls_now();
	v->seq = LS_RD(m, tp, write_seq);
	return 0;
}

#endif
