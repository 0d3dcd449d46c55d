/* UDP socket points (sock_send, sock_recv of a datagram), shared by sock.bpf.c (the syscall
 * entries, the reads) and netfilter.bpf.c (the send, at ip_out). A datagram is known by its
 * hash on every hop (common.bpf.h ls_udp_hash): these points report the same hash, so the
 * grouper puts them in the datagram's record on that host.
 *
 * Why these hooks. UDP has no tracepoint at udp_sendmsg's entry, and none with the skb on
 * the read's path the usual datagram takes (udp_recvmsg copies a linear skb with
 * copy_linear_skb, which skb:skb_copy_datagram_iovec does not see). What there is: the
 * syscall entry (raw_syscalls sys_enter: the call's fd, so its socket), sock_send_length /
 * sock_recv_length when sendmsg/recvmsg return (the socket, the bytes), ip_out in the
 * sending task's context (the datagram) and sk_data_ready when a datagram is queued.
 *   send  sys_enter of sendto/sendmsg/sendmmsg/write/writev on a covered UDP socket's fd:
 *         the call's entry time and socket in the task's storage (udp_call). The
 *         datagram's ip_out (LOCAL_OUT, in the same task) emits sock_send for its hash
 *         stamped with that time when its skb->sk is that socket and its source port the
 *         socket's; sock_send_length (the call returned) disarms it, so a datagram the
 *         socket sends later outside the call (e.g. UDP_CORK released by setsockopt) gets
 *         none rather than a wrong time. ip_out runs before any qdisc, in the caller's
 *         context, so a qdisc deferral cannot move it. Counts the flow's app bytes (UDP
 *         payload) and datagrams (LS_FS_SEND) for every datagram so matched.
 *   recv  sys_enter of recvfrom/recvmsg/recvmmsg/read/readv on a covered UDP socket's fd:
 *         the datagram at the head of its queue (reader_queue, then sk_receive_queue) is
 *         the one the read takes (UDP reads in order); its hash and flow (data direction,
 *         from its IP header) in the task's storage. An empty queue (a blocking read): the
 *         first datagram queued after it, taken at sk_data_ready (udp_wait). At
 *         sock_recv_length (ret >= 0, not MSG_PEEK) sock_recv is emitted for it, now: the
 *         app has the bytes. A partial read takes the whole datagram (UDP discards the
 *         rest) and counts the bytes copied. recvmmsg: the next head after each message.
 *         Counts app bytes and reads (LS_FS_RECV).
 * The netns is the socket's (skb->dev of a queued datagram is UDP's dev_scratch). */
#ifndef LATSCOPE_UDP_SOCK_BPF_H
#define LATSCOPE_UDP_SOCK_BPF_H

#include "common.bpf.h"
#include <bpf/bpf_tracing.h>

/* The syscalls (the running architecture's numbers) whose first argument is a socket fd
 * that sends or receives a datagram. */
#if defined(__TARGET_ARCH_x86)
#define LS_NR_READ 0
#define LS_NR_WRITE 1
#define LS_NR_READV 19
#define LS_NR_WRITEV 20
#define LS_NR_SENDTO 44
#define LS_NR_RECVFROM 45
#define LS_NR_SENDMSG 46
#define LS_NR_RECVMSG 47
#define LS_NR_RECVMMSG 299
#define LS_NR_SENDMMSG 307
#elif defined(__TARGET_ARCH_arm64) || defined(__TARGET_ARCH_riscv)
#define LS_NR_READ 63
#define LS_NR_WRITE 64
#define LS_NR_READV 65
#define LS_NR_WRITEV 66
#define LS_NR_SENDTO 206
#define LS_NR_RECVFROM 207
#define LS_NR_SENDMSG 211
#define LS_NR_RECVMSG 212
#define LS_NR_RECVMMSG 243
#define LS_NR_SENDMMSG 269
#else
#error "UDP socket points: syscall numbers of this architecture not listed (udp_sock.bpf.h)"
#endif

#define LS_S_IFMT 0170000
#define LS_S_IFSOCK 0140000

/* A datagram queued while a read waited on an empty queue (see the header): per socket. */
struct ls_udp_wait {
	struct ls_hit rx;
	__u8 waiting;
	__u8 have;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);                 /* the socket's address */
	__type(value, struct ls_udp_wait);
} udp_wait SEC(".maps");

/* The covered UDP socket behind the current task's fd, else NULL. */
static __always_inline struct sock *ls_fd_udp_sock(long fd)
{
	struct task_struct *t = bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(t, files, fdt);
	struct file **fds;
	struct file *f = 0;
	struct socket *so;
	struct sock *sk;

	if (!fdt || fd < 0 || fd >= BPF_CORE_READ(fdt, max_fds))
		return 0;
	fds = BPF_CORE_READ(fdt, fd);
	if (bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]) || !f)
		return 0;
	if ((BPF_CORE_READ(f, f_inode, i_mode) & LS_S_IFMT) != LS_S_IFSOCK)
		return 0;
	so = BPF_CORE_READ(f, private_data);
	sk = BPF_CORE_READ(so, sk);
	if (!sk || ls_sk_protocol(sk, LS_RAW) != IPPROTO_UDP)
		return 0;
	if (!ls_netns_ok(ls_sk_netns(sk, LS_RAW)) || !ls_sk_ports_ok(sk, LS_RAW))
		return 0;
	return sk;
}

/* A queued datagram's flow (data direction) and hash, as every IP point has them. */
static __always_inline int ls_udp_datagram(const struct sk_buff *skb, struct ls_hit *h)
{
	struct ls_l4 l;

	return ls_skb_flow(skb, BPF_CORE_READ(skb, network_header), BPF_CORE_READ(skb, protocol),
			   h, &l, LS_RAW) && h->proto == IPPROTO_UDP;
}

/* The datagram a read takes next: the head of reader_queue, else of sk_receive_queue. */
static __always_inline struct sk_buff *ls_udp_head(const struct sock *sk)
{
	void *rq = (void *)sk + bpf_core_field_offset(struct udp_sock, reader_queue);
	void *q = (void *)sk + bpf_core_field_offset(struct sock, sk_receive_queue);
	struct sk_buff *skb = BPF_CORE_READ((struct udp_sock *)sk, reader_queue.next);

	if ((void *)skb != rq && skb)
		return skb;
	skb = BPF_CORE_READ(sk, sk_receive_queue.next);
	return (void *)skb != q ? skb : 0;
}

/* sys_enter: the task's call record when the syscall's fd (its first argument) is a
 * covered UDP socket (*sk, made if need be), else the existing one if any (to disarm). */
static __always_inline struct ls_udp_call *ls_udp_call_at(struct pt_regs *regs,
							  struct sock **sk)
{
	*sk = ls_fd_udp_sock(PT_REGS_PARM1_CORE_SYSCALL(regs));
	return bpf_task_storage_get(&udp_call, bpf_get_current_task_btf(), 0,
				    *sk ? BPF_LOCAL_STORAGE_GET_F_CREATE : 0);
}

/* sys_enter of a send: arm the task's call with its socket and entry time (or disarm). */
static __always_inline int udp_send_enter(struct pt_regs *regs, long id)
{
	struct ls_udp_call *v;
	struct sock *sk;

	if (id != LS_NR_SENDTO && id != LS_NR_SENDMSG && id != LS_NR_SENDMMSG &&
	    id != LS_NR_WRITE && id != LS_NR_WRITEV)
		return 0;
	v = ls_udp_call_at(regs, &sk);
	if (!v)
		return 0;
	v->send_sk = (__u64)sk;
	v->send_ts = sk ? ls_now() : 0;
	v->send_multi = id == LS_NR_SENDMMSG;
	return 0;
}

/* sock_send_length of a UDP socket: the call returned; its datagrams are out. */
static __always_inline int udp_send_done(const struct sock *sk)
{
	struct ls_udp_call *v = bpf_task_storage_get(&udp_call, bpf_get_current_task_btf(), 0, 0);

	if (v && v->send_sk == (__u64)sk && !v->send_multi)
		v->send_sk = 0;
	return 0;
}

/* ip_out of a UDP datagram (h, l: ls_parse_flow's), in the sending task's context: a
 * datagram of the call the task is in gets its sock_send and its app bytes counted. */
static __always_inline void udp_send_out(const struct sk_buff *skb, const struct ls_hit *h,
					 const struct ls_l4 *l, __u32 netns)
{
	const struct sock *sk = skb->sk;
	struct ls_udp_call *v;
	__u16 ulen;

	if (!sk)
		return;
	v = bpf_task_storage_get(&udp_call, bpf_get_current_task_btf(), 0, 0);
	if (!v || !v->send_sk || v->send_sk != (__u64)sk)
		return;
	/* the app's datagram, not a tunnel's outer header around it */
	if (h->sport != BPF_CORE_READ(sk, __sk_common.skc_num))
		return;
	ulen = bpf_ntohs(l->ulen);
	ls_fs_add(h, netns, 0, LS_FS_SEND, ulen >= 8 ? ulen - 8 : 0, 1);
	if (ls_udp_sampled(h->seq))
		ls_emit_at(h, LS_SOCK_SEND, v->send_ts, netns, 0, 0);
}

/* sys_enter of a read: the datagram it will take (the queue's head), or wait for one. */
static __always_inline int udp_recv_enter(struct pt_regs *regs, long id)
{
	struct ls_udp_call *v;
	struct sk_buff *skb;
	struct sock *sk;

	if (id != LS_NR_RECVFROM && id != LS_NR_RECVMSG && id != LS_NR_RECVMMSG &&
	    id != LS_NR_READ && id != LS_NR_READV)
		return 0;
	v = ls_udp_call_at(regs, &sk);
	if (!v)
		return 0;
	v->recv_sk = (__u64)sk;
	v->recv_skb = 0;
	v->recv_multi = id == LS_NR_RECVMMSG;
	if (!sk)
		return 0;
	skb = ls_udp_head(sk);
	if (skb && ls_udp_datagram(skb, &v->rx)) {
		v->recv_skb = (__u64)skb;
	} else {
		struct ls_udp_wait w = {.waiting = 1};
		__u64 key = (__u64)sk;

		bpf_map_update_elem(&udp_wait, &key, &w, BPF_ANY);
	}
	return 0;
}

/* sk_data_ready: a datagram queued on a socket a read waits on (its queue was empty). */
static __always_inline int udp_ready(const struct sock *sk, const int m)
{
	struct ls_udp_wait *w;
	struct sk_buff *skb;
	__u64 key = (__u64)sk;

	if (ls_sk_protocol(sk, m) != IPPROTO_UDP)
		return 0;
	w = bpf_map_lookup_elem(&udp_wait, &key);
	if (!w || !w->waiting || w->have)
		return 0;
	/* the queue's tail: the datagram just queued (UDP wakes the reader right after) */
	skb = BPF_CORE_READ(sk, sk_receive_queue.prev);
	if ((void *)skb != (void *)sk + bpf_core_field_offset(struct sock, sk_receive_queue) &&
	    skb && ls_udp_datagram(skb, &w->rx))
		w->have = 1;
	return 0;
}

/* sock_recv_length of a UDP socket (ret >= 0, not MSG_PEEK): the read took its datagram. */
static __always_inline int udp_recv_done(const struct sock *sk, int ret, const int m)
{
	struct ls_udp_call *v = bpf_task_storage_get(&udp_call, bpf_get_current_task_btf(), 0, 0);
	struct ls_hit h;
	struct sk_buff *next;
	int have = 0;
	__u32 netns;

	if (!v || !v->recv_sk || v->recv_sk != (__u64)sk)
		return 0;
	__builtin_memset(&h, 0, sizeof(h));
	if (v->recv_skb) {
		h = v->rx;
		have = 1;
	} else {
		__u64 key = (__u64)sk;
		struct ls_udp_wait *w = bpf_map_lookup_elem(&udp_wait, &key);

		if (w && w->have) {
			h = w->rx;
			have = 1;
		}
		if (w)
			bpf_map_delete_elem(&udp_wait, &key);
	}
	if (v->recv_multi && ret >= 0) {
		/* recvmmsg: the next message takes the new head */
		next = ls_udp_head(sk);
		v->recv_skb = next && ls_udp_datagram(next, &v->rx) ? (__u64)next : 0;
	} else {
		v->recv_sk = 0;
	}
	if (!have || ret < 0)
		return 0;
	netns = ls_sk_netns(sk, m);
	ls_fs_add(&h, netns, 0, LS_FS_RECV, ret, 1);
	if (ls_udp_sampled(h.seq))
		ls_emit_at(&h, LS_SOCK_RECV, 0, netns, 0, 0);
	return 0;
}

#endif
