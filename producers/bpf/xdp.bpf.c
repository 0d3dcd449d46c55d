/* The XDP point: the earliest receive timestamp, before the stack builds an skb.
 * Opt-in (`latscope agent --xdp`): attaching XDP changes the receive path being measured
 * (native XDP switches a veth to NAPI/GRO), and a device holds one XDP link, so it cannot
 * share a device with the sync responder. One object per covered namespace (xdp_netns).
 * Hooks:
 *   xdp  XDP on each device of a covered namespace but lo and bridges (XDP on a bridge
 *        blocks its ports'): native where the driver has it (veth, NICs; before dev_rx),
 *        generic elsewhere (runs just after dev_rx)
 * Multi-buffer aware (xdp.frags): headers come from the linear part, the length from
 * bpf_xdp_get_buff_len, so a GSO packet's whole range is reported.
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

volatile const __u32 xdp_netns = 0;   /* inode of the namespace this object's devices live in */

SEC("xdp.frags")
int xdp_point(struct xdp_md *ctx)
{
	unsigned char *data = (void *)(long)ctx->data;
	unsigned char *data_end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = (void *)data;
	struct ls_hit h;

	if ((void *)(eth + 1) > (void *)data_end)
		return XDP_PASS;
	if (ls_parse(data, sizeof(*eth), bpf_xdp_get_buff_len(ctx), data_end - data,
		     eth->h_proto, &h))
		ls_emit_at(&h, LS_XDP, 0, xdp_netns, 0, ctx->ingress_ifindex);
	return XDP_PASS;
}
