/* Device points at tracepoints, on every device a packet crosses (NIC, veth, bridge, tap).
 * Each variant is a thin entry into dev.bpf.h; schemas/points.py orders them (function-hook
 * variants: dev_fn.bpf.c) and the agent attaches the first the kernel has.
 * Hooks:
 *   dev_queue  tp_btf/net_dev_queue        before the qdisc (TX)
 *              raw_tp/net_dev_queue
 *   dev_xmit   tp_btf/net_dev_start_xmit   qdisc done, the driver starts (TX); counts the
 *                                          flow's packets (flow_stats.bpf.h)
 *              raw_tp/net_dev_start_xmit
 *   dev_rx     tp_btf/netif_receive_skb    the stack takes the packet from the device (RX);
 *                                          counts the flow's packets
 *              raw_tp/netif_receive_skb
 */
#include "dev.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("tp_btf/net_dev_queue")
int BPF_PROG(dev_queue, struct sk_buff *skb)
{
	return dev_point(skb, skb->dev, LS_DEV_QUEUE, 0, LS_FS_NONE, LS_BTF);
}

SEC("raw_tp/net_dev_queue")
int dev_queue_raw(struct bpf_raw_tracepoint_args *ctx)
{
	struct sk_buff *skb = (void *)ctx->args[0];

	return dev_point(skb, BPF_CORE_READ(skb, dev), LS_DEV_QUEUE, 0, LS_FS_NONE, LS_RAW);
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(dev_xmit, const struct sk_buff *skb, const struct net_device *dev)
{
	return dev_point(skb, dev, LS_DEV_XMIT, 0, LS_FS_TX, LS_BTF);
}

SEC("raw_tp/net_dev_start_xmit")
int dev_xmit_raw(struct bpf_raw_tracepoint_args *ctx)
{
	return dev_point((void *)ctx->args[0], (void *)ctx->args[1], LS_DEV_XMIT, 0, LS_FS_TX,
			 LS_RAW);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(dev_rx, struct sk_buff *skb)
{
	return dev_point(skb, skb->dev, LS_DEV_RX, 1, LS_FS_RX, LS_BTF);
}

SEC("raw_tp/netif_receive_skb")
int dev_rx_raw(struct bpf_raw_tracepoint_args *ctx)
{
	struct sk_buff *skb = (void *)ctx->args[0];

	return dev_point(skb, BPF_CORE_READ(skb, dev), LS_DEV_RX, 1, LS_FS_RX, LS_RAW);
}
