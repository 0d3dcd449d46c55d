/* Device point logic (dev_queue, dev_xmit, dev_rx), shared by every hook variant in
 * dev.bpf.c. m: read mode (common.bpf.h), a constant per variant. */
#ifndef LATSCOPE_DEV_BPF_H
#define LATSCOPE_DEV_BPF_H

#include "common.bpf.h"

/* rx: the network header may not be set yet (compat.h), parse from skb->data. */
static __always_inline int dev_point(const struct sk_buff *skb, const struct net_device *dev,
				     __u8 point, int rx, const int m)
{
	struct ls_hit h;
	__u32 netns;

	if (!dev)
		return 0;
	netns = LS_RD(m, dev, nd_net.net, ns.inum);
	if (!ls_netns_ok(netns))
		return 0;
	if (!ls_parse_skb(skb, ls_skb_nh_off(skb, rx, m), LS_RD(m, skb, protocol), &h, m))
		return 0;
	ls_emit(&h, point, 0, netns, dev, m);
	return 0;
}

#endif
