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
	struct iphdr *ip4;      /* exactly one of ip4/ip6 is set */
	struct ipv6hdr *ip6;
	struct udphdr *udp;
	struct sync_probe *probe; /* NULL when the payload is shorter than a probe */
};

/* Returns 0 when the frame is UDP over IPv4/IPv6 (fills f), -1 otherwise. */
static __always_inline int sync_parse(struct xdp_md *ctx, struct sync_frame *f)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	void *l4;

	if ((void *)(eth + 1) > end)
		return -1;
	f->eth = eth;
	f->ip4 = NULL;
	f->ip6 = NULL;
	if (eth->h_proto == bpf_htons(SYNC_ETH_P_IP)) {
		struct iphdr *ip4 = (void *)(eth + 1);

		if ((void *)(ip4 + 1) > end || ip4->protocol != SYNC_IPPROTO_UDP)
			return -1;
		if (ip4->frag_off & bpf_htons(0x3fff)) /* MF or a fragment offset */
			return -1;
		if (ip4->ihl < 5)
			return -1;
		l4 = (void *)ip4 + ip4->ihl * 4;
		f->ip4 = ip4;
	} else if (eth->h_proto == bpf_htons(SYNC_ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != SYNC_IPPROTO_UDP)
			return -1;
		l4 = ip6 + 1;
		f->ip6 = ip6;
	} else {
		return -1;
	}
	f->udp = l4;
	if ((void *)(f->udp + 1) > end)
		return -1;
	f->probe = (void *)(f->udp + 1);
	if ((void *)(f->probe + 1) > end)
		f->probe = NULL;
	return 0;
}

/* The frame's source address as an allow-list key (IPv4 mapped into ::ffff:0:0/96). */
static __always_inline void sync_src_key(struct sync_frame *f, struct sync_addr *k)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (f->ip4) {
		k->addr[10] = 0xff;
		k->addr[11] = 0xff;
		__builtin_memcpy(&k->addr[12], &f->ip4->saddr, 4);
	} else {
		__builtin_memcpy(k->addr, &f->ip6->saddr, 16);
	}
}

#endif
