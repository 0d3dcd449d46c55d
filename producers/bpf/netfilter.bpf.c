/* IP points, as netfilter BPF links (kernel 6.4+). A link only sees the network namespace it
 * was created in, so the agent attaches this program in every namespace it covers, for IPv4
 * and IPv6, at four hooks; the hook number in the state tells the point.
 * Hooks:
 *   ip_pre   netfilter PRE_ROUTING   IP receive
 *   ip_in    netfilter LOCAL_IN      IP done, to TCP/UDP
 *   ip_out   netfilter LOCAL_OUT     segment handed to IP; a UDP datagram of the send call
 *                                    the task is in also gets its sock_send here
 *                                    (udp_sock.bpf.h)
 *   ip_post  netfilter POST_ROUTING  IP done (also forwarded packets)
 */
#include "common.bpf.h"
#include "udp_sock.bpf.h"

char LICENSE[] SEC("license") = "GPL";

#define NF_ACCEPT 1

SEC("netfilter")
int ip_point(struct bpf_nf_ctx *ctx)
{
	const struct nf_hook_state *state = ctx->state;
	struct sk_buff *skb = ctx->skb;
	const struct net_device *dev;
	struct ls_hit h;
	struct ls_l4 l;
	__u32 netns;
	__u8 point;

	switch (state->hook) {
	case 0: point = LS_IP_PRE; dev = state->in; break;
	case 1: point = LS_IP_IN; dev = state->in; break;
	case 3: point = LS_IP_OUT; dev = state->out; break;
	case 4: point = LS_IP_POST; dev = state->out; break;
	default: return NF_ACCEPT;
	}
	netns = state->net->ns.inum;
	if (!ls_netns_ok(netns))
		return NF_ACCEPT;
	if (!ls_skb_flow(skb, ls_skb_nh_off(skb, 1, LS_BTF), skb->protocol, &h, &l, LS_BTF))
		return NF_ACCEPT;
	if (point == LS_IP_OUT && h.proto == IPPROTO_UDP)
		udp_send_out(skb, &h, &l, netns);
	if (ls_parse_sampled(skb->head, &h, &l))
		ls_emit(&h, point, 0, netns, dev, LS_BTF);
	return NF_ACCEPT;
}
