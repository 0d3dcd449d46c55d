/* Socket points at kernel functions, for kernels whose sock_*_length tracepoints serve
 * neither as tp_btf nor as raw_tp. Kept out of sock.bpf.c because a kernel that refuses
 * fentry/fexit must still load that object whole. Thin entries into sock.bpf.h.
 * Hooks:
 *   sock_send  fentry/tcp_sendmsg_locked  entry time (once per call)
 *              fexit/tcp_sendmsg          bytes [write_seq - ret, write_seq)
 *   sock_recv  fexit/tcp_recvmsg          bytes [copied_seq - ret, copied_seq)
 */
#include "sock.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("fentry/tcp_sendmsg_locked")
int BPF_PROG(send_entry_fentry, struct sock *sk, struct msghdr *msg)
{
	return send_start_mark(sk, msg, LS_BTF);
}

SEC("fexit/tcp_sendmsg")
int BPF_PROG(sock_send_fexit, struct sock *sk, struct msghdr *msg, size_t size, int ret)
{
	return sock_point(sk, ret, LS_SOCK_SEND, LS_BTF);
}

SEC("fexit/tcp_recvmsg")
int BPF_PROG(sock_recv_fexit, struct sock *sk, struct msghdr *msg, size_t len, int flags,
	     int *addr_len, int ret)
{
	if (flags & MSG_PEEK)
		return 0;
	return sock_point(sk, ret, LS_SOCK_RECV, LS_BTF);
}
