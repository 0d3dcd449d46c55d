/* The per-run floor on this machine: programs that do nothing, on the tracepoints
 * LatScope's points use (benchmarks/agent_overhead.py loads them beside the agents). What
 * bpf_stats reads for them is the kernel's call into a program and back plus one of its own
 * clock reads; timed from outside with bpf_stats off (the rtt phase) a run costs them
 * about as much. No program can save it, so the per-probe figures are also printed net of
 * this floor.
 * Hooks: tp_btf net_dev_queue, net_dev_start_xmit, netif_receive_skb, tcp_probe,
 *        sock_send_length, sock_recv_length, tcp_sendmsg_locked: each returns at once. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/net_dev_queue")
int BPF_PROG(floor_queue) { return 0; }

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(floor_xmit) { return 0; }

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(floor_rx) { return 0; }

SEC("tp_btf/tcp_probe")
int BPF_PROG(floor_tcp_rx) { return 0; }

SEC("tp_btf/sock_send_length")
int BPF_PROG(floor_send) { return 0; }

SEC("tp_btf/sock_recv_length")
int BPF_PROG(floor_recv) { return 0; }

SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(floor_entry) { return 0; }
