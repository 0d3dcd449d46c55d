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
 * never used for a later call). ts == 0: no call in progress; LS_SEND_UNTIMED: a call in
 * progress whose bytes hold no sampled byte, so its entry time was not read (a clock read
 * costs more than the rest of the entry's work). */
#define LS_SEND_UNTIMED (~0ULL)

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

/* The socket's tcp_sock (sk is a full socket of protocol TCP where this is called, so the
 * cast needs no check): typed mode reads it through LS_CAST, untyped through probe reads. */
static __always_inline struct tcp_sock *ls_tcp_sk(const struct sock *sk, const int m)
{
	return m == LS_RAW ? (struct tcp_sock *)sk
			   : (struct tcp_sock *)LS_CAST(sk, struct tcp_sock);
}

/* Start tracking the sender's byte b (wait.bpf.h) at now (ktime) if the socket has a free
 * slot. */
static __always_inline void send_track(struct sock *sk, struct tcp_sock *tp, __u32 b, __u64 now)
{
	struct ls_wait_st *w;

	if ((__s32)(b - tp->snd_nxt) < 0)
		return;                           /* sent already */
	w = bpf_sk_storage_get(&sock_wait, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!w)
		return;
	if (w->s_last)
		ls_wait_send_step(w, tp, now);    /* the others up to now */
	ls_wait_start(w->s, &w->s_last, b, now);
}

/* sock_send's sampled hit [h->seq, +len): bytes tracked from an entry (send_start_mark)
 * that this call did not take in (a short write) are let go. A byte is tracked only from
 * its call's entry, never from here: its time inside the call would be lost. */
static __always_inline void sock_send_wait(struct sock *sk, const struct ls_hit *h)
{
	struct ls_wait_st *w = bpf_sk_storage_get(&sock_wait, sk, 0, 0);
	__u32 end = h->seq + h->len;

	if (!w || !w->s_last)
		return;
	for (int i = 0; i < LS_WAIT_SLOTS; i++)
		if (w->s[i].live && (__s32)(w->s[i].seq - end) >= 0)
			w->s[i].live = 0;
}

/* A sampled read: an event for the receiver's tracked bytes; the read that hands one over
 * carries its causes (returns 1: emitted here); tracked bytes it read past without our
 * seeing them are let go. */
static __always_inline int sock_recv_wait(struct sock *sk, struct tcp_sock *tp,
					  const struct ls_hit *h, __u32 netns)
{
	struct ls_wait_st *w = ls_wait_event(sk);
	__u32 wait[LS_W_MAX], b = 0, copied = tp->copied_seq;
	int i;

	if (!w || !w->r_last)
		return 0;
	i = ls_wait_find(w->r, h->seq, h->len, h->seq);
	if (i >= 0 && i < LS_WAIT_SLOTS) {
		ls_wait_take(w->r, &w->r_last, i, wait, &b);
		ls_emit_tracked(h, LS_SOCK_RECV, netns, b, wait);
		return 1;
	}
	for (int j = 0; j < LS_WAIT_SLOTS; j++)
		if (w->r[j].live && (__s32)(copied - w->r[j].seq) > 0)
			w->r[j].live = 0;
	return 0;
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
	if (!(start.ts && start.ts != LS_SEND_UNTIMED && start.seq == h.seq))
		start.ts = 0;
	if (m == LS_BTF) {
		if (point == LS_SOCK_SEND)
			sock_send_wait(sk, &h);
		else if (sock_recv_wait(sk, tp, &h, netns))
			return 0;
	}
	ls_emit(&h, point, start.ts, netns, 0, m);
	return 0;
}

/* sock_send's entry time: the first firing per sendmsg call remembers when, and write_seq.
 * A call that will write a sampled byte (msg: its bytes, typed hooks only) starts tracking
 * it here (wait.bpf.h): its time inside the call (waiting for send-buffer space) is part of
 * its socket segment, and goes to what holds the queue ahead of it. */
static __always_inline int send_start_mark(const struct sock *sk, const struct msghdr *msg,
					   const int m)
{
	struct send_start_v *v;
	struct tcp_sock *tp;
	__u64 n, now;

	if (!ls_netns_ok(ls_sk_netns(sk, m)) || !ls_sk_ports_ok(sk, m))
		return 0;
	v = bpf_task_storage_get(&send_start, bpf_get_current_task_btf(), 0,
				 BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!v || v->ts)
		return 0;            /* not the first chunk of this call */
	tp = ls_tcp_sk(sk, m);
	v->seq = LS_RD(m, tp, write_seq);
	/* the call writes at most its bytes from write_seq on: none sampled, no time (untyped
	 * variants do not see the call's size) */
	if (m == LS_BTF && msg) {
		n = msg->msg_iter.count;
		if (n > 0x7fffffff)
			n = 0x7fffffff;
		if (!ls_sampled(v->seq, n)) {
			v->ts = LS_SEND_UNTIMED;
			return 0;
		}
	}
	now = bpf_ktime_get_ns();
	v->ts = ls_clock(now);
	if (m == LS_BTF && msg)
		send_track((struct sock *)sk, tp, ls_first_sampled(v->seq), now);
	return 0;
}

#endif
