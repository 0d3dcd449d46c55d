/* Device point logic (dev_queue, dev_xmit, dev_rx), shared by every hook variant in
 * dev.bpf.c. m: read mode (common.bpf.h), a constant per variant. dev_xmit and dev_rx also
 * count every data packet of a covered flow (flow_stats.bpf.h): the bytes and segments that
 * leave and reach each device. */
#ifndef LATSCOPE_DEV_BPF_H
#define LATSCOPE_DEV_BPF_H

#include "common.bpf.h"

#define LS_FS_NONE 0xff   /* a point that counts nothing (dev_queue) */

/* rx: the network header may not be set yet (compat.h), parse from skb->data.
 * fs_kind: LS_FS_TX, LS_FS_RX or LS_FS_NONE, a constant per variant. */
static __always_inline int dev_point(const struct sk_buff *skb, const struct net_device *dev,
				     __u8 point, int rx, const __u8 fs_kind, const int m)
{
	unsigned char *head;
	struct ls_hit h;
	struct ls_l4 l;
	__u32 netns, nh, end;

	if (!dev)
		return 0;
	netns = LS_RD(m, dev, nd_net.net, ns.inum);
	if (!ls_netns_ok(netns))
		return 0;
	head = LS_RD(m, skb, head);
	nh = ls_skb_nh_off(skb, rx, m);
	end = (__u32)((unsigned long)LS_RD(m, skb, data) - (unsigned long)head) +
	      LS_RD(m, skb, len);
	if (!ls_parse_flow(head, nh, end, end - LS_RD(m, skb, data_len), LS_RD(m, skb, protocol),
			   &h, &l))
		return 0;
	if (fs_kind != LS_FS_NONE)
		ls_fs_add(&h, netns, LS_RD(m, dev, ifindex), fs_kind, end - nh,
			  ls_skb_segs(skb, m));
	if (!ls_parse_sampled(head, &h, &l))
		return 0;
	ls_emit(&h, point, 0, netns, dev, m);
	return 0;
}

#endif
