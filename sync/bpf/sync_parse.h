/* LatScope clock sync: locating the sync probe inside an XDP frame (Ethernet, IPv4 or
 * IPv6, UDP). Used by both XDP programs so they parse identically. Packets with IPv4
 * options are handled; IPv6 extension headers and IP fragments are not sync probes. */
#ifndef LATSCOPE_SYNC_PARSE_H
#define LATSCOPE_SYNC_PARSE_H

#include "sync.h"

#define SYNC_ETH_P_IP 0x0800
#define SYNC_ETH_P_IPV6 0x86DD
#define SYNC_IPPROTO_UDP 17
#define SYNC_ETH_ALEN 6

struct sync_frame {
	struct ethhdr *eth;
	struct iphdr *ip4;      /* valid when !v6 */
	struct ipv6hdr *ip6;    /* valid when v6 */
	__u32 v6;
	struct udphdr *udp;
	struct sync_probe *probe; /* valid when sync_parse returned SYNC_PROBE */
};

/* What sync_parse found. Results are flags, never NULL pointers: the verifier cannot tell
 * a packet pointer from NULL, but it tracks constants exactly. */
#define SYNC_NOT_UDP -1
#define SYNC_SHORT 0   /* UDP, payload shorter than a probe */
#define SYNC_PROBE 1   /* UDP with a probe-sized payload */

/* Fills f when the frame is UDP over IPv4/IPv6. */
static __always_inline int sync_parse(struct xdp_md *ctx, struct sync_frame *f)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l4;

	if ((void *)(eth + 1) > end)
		return SYNC_NOT_UDP;
	f->eth = eth;
	f->v6 = 0;
	if (eth->h_proto == bpf_htons(SYNC_ETH_P_IP)) {
		struct iphdr *ip4 = (void *)(eth + 1);

		if ((void *)(ip4 + 1) > end || ip4->protocol != SYNC_IPPROTO_UDP)
			return SYNC_NOT_UDP;
		if (ip4->frag_off & bpf_htons(0x3fff)) /* MF or a fragment offset */
			return SYNC_NOT_UDP;
		if (ip4->ihl < 5)
			return SYNC_NOT_UDP;
		l4 = (void *)ip4 + ip4->ihl * 4;
		f->ip4 = ip4;
	} else if (eth->h_proto == bpf_htons(SYNC_ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != SYNC_IPPROTO_UDP)
			return SYNC_NOT_UDP;
		l4 = ip6 + 1;
		f->ip6 = ip6;
		f->v6 = 1;
	} else {
		return SYNC_NOT_UDP;
	}
	f->udp = l4;
	if ((void *)(f->udp + 1) > end)
		return SYNC_NOT_UDP;
	f->probe = (void *)(f->udp + 1);
	if ((void *)(f->probe + 1) > end)
		return SYNC_SHORT;
	return SYNC_PROBE;
}

/* The frame's source address as an allow-list key (IPv4 mapped into ::ffff:0:0/96). */
static __always_inline void sync_src_key(struct sync_frame *f, struct sync_addr *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (!f->v6) {
		k->addr[10] = 0xff;
		k->addr[11] = 0xff;
		__builtin_memcpy(&k->addr[12], &f->ip4->saddr, 4);
	} else {
		__builtin_memcpy(k->addr, &f->ip6->saddr, 16);
	}
}

/* The frame's destination address, keyed like sync_src_key. */
static __always_inline void sync_dst_key(struct sync_frame *f, struct sync_addr *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (!f->v6) {
		k->addr[10] = 0xff;
		k->addr[11] = 0xff;
		__builtin_memcpy(&k->addr[12], &f->ip4->daddr, 4);
	} else {
		__builtin_memcpy(k->addr, &f->ip6->daddr, 16);
	}
}

#endif
