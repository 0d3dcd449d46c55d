/* The per-run floor on this machine: programs that do nothing, on the hooks
 * LatScope's points use (benchmarks/agent_overhead.py loads them beside the agents). What
 * bpf_stats reads for them is the kernel's call into a program and back plus one of its own
 * clock reads; timed from outside with bpf_stats off (the rtt phase) a run costs them
 * about as much. No program can save it, so the per-probe figures are also printed net of
 * this floor. Each program is named as ours on the same hook, so their figures pair by name.
 * Hooks: tp_btf net_dev_queue, net_dev_start_xmit, netif_receive_skb, tcp_probe,
 *        sock_send_length, sock_recv_length, tcp_sendmsg_locked: each returns at once;
 *        netfilter (the benchmark links it at the IP points' four hooks in its
 *        namespaces): accepts at once;
 *        sockops (cgroup v2 root): asks for the header-option callbacks on connections of
 *        the benchmark's port, as tcp_tx does for covered sockets, and returns at once
 *        from them. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/net_dev_queue")
int BPF_PROG(dev_queue) { return 0; }

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(dev_xmit) { return 0; }

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(dev_rx) { return 0; }

SEC("tp_btf/tcp_probe")
int BPF_PROG(tcp_rx) { return 0; }

SEC("tp_btf/sock_send_length")
int BPF_PROG(sock_send) { return 0; }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(sock_recv) { return 0; }

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(send_entry) { return 0; }

SEC("netfilter")
int ip_point(struct bpf_nf_ctx *ctx) { return 1; /* NF_ACCEPT */ }

volatile const __u16 floor_port = 5201;   /* set by the benchmark: the port its agents watch */

SEC("sockops")
int tcp_tx(struct bpf_sock_ops *skops)
{
	if ((skops->op == BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB
	     || skops->op == BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
	    && (skops->local_port == floor_port
		|| (bpf_ntohl(skops->remote_port) & 0xffff) == floor_port))
		bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
					  BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
	return 1;
}
