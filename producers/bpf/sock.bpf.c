/* Socket points. TCP: the byte ranges an application hands over and receives, mapped to
 * absolute sequence numbers through tcp_sock.write_seq / copied_seq. UDP: the datagrams, by
 * their hash (udp_sock.bpf.h says why these hooks). Each variant is a thin entry into
 * sock.bpf.h / udp_sock.bpf.h; schemas/points.py orders them and the agent attaches the
 * first the kernel has (a candidate stands or falls with its UDP programs).
 * Hooks:
 *   sock_send  tp_btf/tcp_sendmsg_locked  (first firing per call) when the app handed the
 *              bytes over: remembered in the task's local storage, because TCP may transmit
 *              them before sendmsg returns
 *              tp_btf/sock_send_length    bytes [write_seq - ret, write_seq), stamped with
 *              the remembered entry time (its own time if there is none)
 *              raw_tp/tcp_sendmsg_locked + raw_tp/sock_send_length   the same, untyped
 *   sock_recv  tp_btf/sock_recv_length    bytes [copied_seq - ret, copied_seq) reach the app
 *              raw_tp/sock_recv_length
 *   UDP sock_send  tp_btf/sys_enter (udp_send_call): a send syscall on a covered UDP
 *              socket's fd, its entry time; sock_send_length ends the call; the hit itself
 *              is emitted at the datagram's ip_out (netfilter.bpf.c)
 *              raw_tp/sys_enter (udp_send_call_raw)
 *   UDP sock_recv  tp_btf/sys_enter (udp_recv_call): a read on a covered UDP socket's fd,
 *              the datagram at its queue's head; tp_btf/sk_data_ready (udp_ready_tp) the
 *              one queued while a read waited; sock_recv_length emits
 *              raw_tp/sys_enter (udp_recv_call_raw) + raw_tp/sk_data_ready (udp_ready_tp_raw)
 * Function-hook variants (fentry/fexit) of both points: sock_fn.bpf.c.
 */
#include "sock.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(send_entry, const struct sock *sk, const struct msghdr *msg)
{
	/* The tracepoint fires once per chunk the call's loop copies; only the first matters.
	 * A single-buffer call's iterator has moved past what the earlier chunks took: a later
	 * chunk, known without the task-storage lookup. (A call handed an iterator already
	 * advanced, as io_uring's retry of a short send is, gets no entry time: its hit is
	 * stamped at the call's end.) */
	if (bpf_core_enum_value_exists(enum iter_type, ITER_UBUF) &&
	    msg->msg_iter.iter_type == bpf_core_enum_value(enum iter_type, ITER_UBUF) &&
	    msg->msg_iter.iov_offset)
		return 0;
	return send_start_mark(sk, msg, LS_BTF);
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send, struct sock *sk, int ret, int flags)
{
	return sock_point(sk, ret, LS_SOCK_SEND, LS_BTF);
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv, struct sock *sk, int ret, int flags)
{
	if (flags & MSG_PEEK)
		return 0;
	return sock_point(sk, ret, LS_SOCK_RECV, LS_BTF);
}

SEC("raw_tp/tcp_sendmsg_locked")
int send_entry_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return send_start_mark((void *)ctx->args[0], 0, LS_RAW);
}

SEC("raw_tp/sock_send_length")
int sock_send_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return sock_point((void *)ctx->args[0], (int)ctx->args[1], LS_SOCK_SEND, LS_RAW);
}

SEC("raw_tp/sock_recv_length")
int sock_recv_raw(struct bpf_raw_tracepoint_args *ctx)
{
	if ((int)ctx->args[2] & MSG_PEEK)
		return 0;
	return sock_point((void *)ctx->args[0], (int)ctx->args[1], LS_SOCK_RECV, LS_RAW);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(udp_send_call, struct pt_regs *regs, long id)
{
	return udp_send_enter(regs, id);
}

SEC("tp_btf/sys_enter")
int BPF_PROG(udp_recv_call, struct pt_regs *regs, long id)
{
	return udp_recv_enter(regs, id);
}

SEC("tp_btf/sk_data_ready")
int BPF_PROG(udp_ready_tp, const struct sock *sk)
{
	return udp_ready(sk, LS_BTF);
}

SEC("raw_tp/sys_enter")
int udp_send_call_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return udp_send_enter((struct pt_regs *)ctx->args[0], (long)ctx->args[1]);
}

SEC("raw_tp/sys_enter")
int udp_recv_call_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return udp_recv_enter((struct pt_regs *)ctx->args[0], (long)ctx->args[1]);
}

SEC("raw_tp/sk_data_ready")
int udp_ready_tp_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return udp_ready((const struct sock *)ctx->args[0], LS_RAW);
}
