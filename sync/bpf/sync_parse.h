/* LatScope clock sync: locating the sync probe inside an XDP frame (Ethernet, IPv4 or
 * IPv6, UDP). Used by both XDP programs so they parse identically. Packets with IPv4
 * options are handled; IPv6 extension headers and IP fragments are not sync probes. */
#ifndef LATSCOPE_SYNC_PARSE_H
#define LATSCOPE_SYNC_PARSE_H

#include "sync.h"
#include "siphash.h"

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

static __always_inline void sync_key_of(struct sync_addr *k, __u32 v6, const void *a)
{
	__builtin_memset(k, 0, sizeof(*k));
	if (!v6) {
		k->family = 4;
		__builtin_memcpy(k->addr, a, 4);
	} else {
		k->family = 6;
		__builtin_memcpy(k->addr, a, 16);
	}
}

/* The frame's source address as an allow-list key (family included: an IPv4-mapped IPv6
 * source is an IPv6 key and never matches an IPv4 entry). */
static __always_inline void sync_src_key(struct sync_frame *f, struct sync_addr *k)
{
	if (!f->v6)
		sync_key_of(k, 0, &f->ip4->saddr);
	else
		sync_key_of(k, 1, &f->ip6->saddr);
}

/* The frame's destination address, keyed like sync_src_key. */
static __always_inline void sync_dst_key(struct sync_frame *f, struct sync_addr *k)
{
	if (!f->v6)
		sync_key_of(k, 0, &f->ip4->daddr);
	else
		sync_key_of(k, 1, &f->ip6->daddr);
}

static __always_inline int sync_addr_eq(const struct sync_addr *a, const struct sync_addr *b)
{
	const __u64 *x = (const __u64 *)a, *y = (const __u64 *)b;

	return x[0] == y[0] && x[1] == y[1] && x[2] == y[2];
}

/* The MAC of a probe (a copy on the stack: SipHash reads it word by word) under key. */
static __always_inline __u64 sync_mac(const struct sync_key *key, const struct sync_probe *p)
{
	return ls_siphash24(key->k0, key->k1, (const __u64 *)p, SYNC_MAC_WORDS);
}

/* One check for both ends: the responder verifies requests, the manager replies. */
/* epoch -> key; user space installs SYNC_KEY_EPOCHS around its current epoch. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u64);
	__type(value, struct sync_key);
} keys SEC(".maps");

#define SYNC_STALE_KEY 1   /* no key installed for the probe's epoch */
#define SYNC_BAD_MAC 2     /* the MAC does not verify under that epoch's key */

/* The key of p's epoch when p's MAC verifies under it; else NULL, and why. */
static __always_inline struct sync_key *sync_verify(const struct sync_probe *p, int *why)
{
	struct sync_key *key = bpf_map_lookup_elem(&keys, &p->epoch);

	if (!key) {
		*why = SYNC_STALE_KEY;
		return NULL;
	}
	if (sync_mac(key, p) != p->mac) {
		*why = SYNC_BAD_MAC;
		return NULL;
	}
	return key;
}

#endif
