/* Socket points (TCP): the byte ranges an application hands over and receives, mapped to
 * absolute sequence numbers through tcp_sock.write_seq / copied_seq. Each variant is a thin
 * entry into sock.bpf.h; schemas/points.py orders them and the agent attaches the first the
 * kernel has.
 * Hooks:
 *   sock_send  tp_btf/tcp_sendmsg_locked  (first firing per call) when the app handed the
 *              bytes over: remembered in the task's local storage, because TCP may transmit
 *              them before sendmsg returns
 *              tp_btf/sock_send_length    bytes [write_seq - ret, write_seq), stamped with
 *              the remembered entry time (its own time if there is none)
 *              raw_tp/tcp_sendmsg_locked + raw_tp/sock_send_length   the same, untyped
 *   sock_recv  tp_btf/sock_recv_length    bytes [copied_seq - ret, copied_seq) reach the app
 *              raw_tp/sock_recv_length
 * Function-hook variants (fentry/fexit) of both points: sock_fn.bpf.c.
 */
#include "sock.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(send_entry, const struct sock *sk, const struct msghdr *msg)
{
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
