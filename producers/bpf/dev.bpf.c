/* Device points, on every device a packet crosses (NIC, veth, bridge, tap).
 * Hooks:
 *   dev_queue  tp_btf/net_dev_queue        before the qdisc (TX)
 *   dev_xmit   tp_btf/net_dev_start_xmit   qdisc done, the driver starts (TX)
 *   dev_rx     tp_btf/netif_receive_skb    the stack takes the packet from the device (RX)
 */
#include "common.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

static __always_inline int dev_point(const struct sk_buff *skb, const struct net_device *dev,
				     __u8 point, int rx)
{
	struct ls_hit h;
	__u32 netns;

	if (!dev)
		return 0;
	netns = dev->nd_net.net->ns.inum;
	if (!ls_netns_ok(netns))
		return 0;
	if (!ls_parse_skb(skb, ls_skb_nh_off(skb, rx), skb->protocol, &h))
		return 0;
	ls_emit(&h, point, 0, netns, dev);
	return 0;
}

SEC("tp_btf/net_dev_queue")
int BPF_PROG(dev_queue, struct sk_buff *skb)
{
	return dev_point(skb, skb->dev, LS_DEV_QUEUE, 0);
}

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(dev_xmit, const struct sk_buff *skb, const struct net_device *dev)
{
	return dev_point(skb, dev, LS_DEV_XMIT, 0);
}

SEC("tp_btf/netif_receive_skb")
int BPF_PROG(dev_rx, struct sk_buff *skb)
{
	return dev_point(skb, skb->dev, LS_DEV_RX, 1);
}
