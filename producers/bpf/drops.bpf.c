/* Drops with the kernel's reason: for every packet the kernel frees as dropped (not consumed)
 * in a covered namespace, of an allowed port, the flow counters (flow_stats.bpf.h) add its IP
 * bytes and 1 under LS_FS_DROP with the drop reason (enum skb_drop_reason) in the key's
 * ifindex; user space names the reason from the kernel's BTF (producers/flow_stats.py).
 * The tracepoint fires only for drops (kfree_skb with a reason other than SKB_CONSUMED;
 * freed-after-use packets go to skb:consume_skb), so the cost is per dropped packet: nothing
 * on the path of a packet that gets through. Attached with the flow counters only, off
 * with them (flow_stats_on). schemas/points.py (DROP_HOOKS) orders the variants; a kernel
 * without the tracepoint leaves drops out, with the reason (agent status `unavailable`).
 * Hooks:
 *   drops  tp_btf/kfree_skb   (skb, location, reason, rx_sk): kernels >= 6.12; the namespace
 *                              of the receiving socket (rx_sk), else the device, else the
 *                              skb's socket
 *          raw_tp/kfree_skb
 *          tp_btf/kfree_skb   drop_nosk: (skb, location, reason), kernels 5.17-6.11; the
 *          raw_tp/kfree_skb   device's namespace, else the skb's socket's
 * Where the packet is: the network header when the stack set it (from IP on; a veth
 * receiver's stale one still points at the same IP header), else skb->data (receive before
 * the stack reset it: the driver set skb->data past the MAC header). skb->protocol must say
 * IPv4/IPv6 and the header's version agree; an IP packet whose header is not there is
 * counted (LS_C_DROP_NOHDR), anything else (ARP, a segment TCP dropped before IP built its
 * header) is no flow's. As for the device counters, only TCP segments carrying data and UDP
 * datagrams count: a dropped pure ACK is no data of any flow.
 */
#include "common.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

/* Namespace inode of the place the packet was dropped: rx_sk (a socket that refused it),
 * else the device it was on, else the socket that sent it; 0: none known. */
static __always_inline __u32 drop_netns(const struct sk_buff *skb, const struct sock *rx_sk,
					const int m)
{
	const struct net_device *dev;
	const struct sock *sk;

	if (rx_sk)
		return ls_sk_netns(rx_sk, m);
	dev = LS_RD(m, skb, dev);
	if (dev)
		return LS_RD(m, dev, nd_net.net, ns.inum);
	sk = LS_RD(m, skb, sk);
	return sk ? ls_sk_netns(sk, m) : 0;
}

static __always_inline int drop_count(const struct sk_buff *skb, __u32 reason,
				      const struct sock *rx_sk, const int m)
{
	unsigned char *head;
	struct ls_hit h;
	struct ls_l4 l;
	__u32 netns, nh, end, data;
	__u16 nh16, proto;
	__u8 ver;

	if (!flow_stats_on)
		return 0;
	/* kernels that route a consumed skb through this tracepoint */
	if (bpf_core_enum_value_exists(enum skb_drop_reason, SKB_CONSUMED) &&
	    reason == bpf_core_enum_value(enum skb_drop_reason, SKB_CONSUMED))
		return 0;
	netns = drop_netns(skb, rx_sk, m);
	if (!netns || !ls_netns_ok(netns))
		return 0;
	proto = LS_RD(m, skb, protocol);
	if (proto != bpf_htons(ETH_P_IP) && proto != bpf_htons(ETH_P_IPV6))
		return 0;
	head = LS_RD(m, skb, head);
	data = (__u32)((unsigned long)LS_RD(m, skb, data) - (unsigned long)head);
	nh16 = LS_RD(m, skb, network_header);
	nh = nh16 == (__u16)~0U ? data : nh16;
	if (bpf_probe_read_kernel(&ver, 1, head + nh) ||
	    (ver >> 4) != (proto == bpf_htons(ETH_P_IP) ? 4 : 6)) {
		ls_count(LS_C_DROP_NOHDR);
		return 0;
	}
	end = data + LS_RD(m, skb, len);
	if (!ls_parse_flow(head, nh, end, end - LS_RD(m, skb, data_len), proto, &h, &l))
		return 0;
	ls_fs_add(&h, netns, reason, LS_FS_DROP, end - nh, 1);
	return 0;
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(drop, struct sk_buff *skb, void *location, enum skb_drop_reason reason,
	     struct sock *rx_sk)
{
	return drop_count(skb, reason, rx_sk, LS_BTF);
}

SEC("raw_tp/kfree_skb")
int drop_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return drop_count((void *)ctx->args[0], (__u32)ctx->args[2], (void *)ctx->args[3],
			  LS_RAW);
}

SEC("tp_btf/kfree_skb")
int BPF_PROG(drop_nosk, struct sk_buff *skb, void *location, enum skb_drop_reason reason)
{
	return drop_count(skb, reason, 0, LS_BTF);
}

SEC("raw_tp/kfree_skb")
int drop_nosk_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return drop_count((void *)ctx->args[0], (__u32)ctx->args[2], 0, LS_RAW);
}
