// SPDX-License-Identifier: GPL-2.0
/* LatScope clock sync responder, one per host, on the host's sync interface.
 *
 * Hooks: XDP (sync_responder) on the sync interface; XDP (sync_pass) on the veth peer of
 *   that interface when it has no XDP program of its own (a native XDP_TX on veth is
 *   silently dropped unless the peer runs XDP; a pass-through program is enough).
 *
 * A UDP probe to one of the host's own sync addresses (map `local`; probes merely routed
 * through this host pass untouched) and sync_port is answered only when it comes from an
 * allow-listed manager address (same family: IPv4-mapped IPv6 is not IPv4), its epoch has a
 * key in `keys` (user space keeps the previous, current and next epoch's), its MAC
 * verifies under that key, and its probe id was not answered before (LRU `seen`, sized to
 * outlive the key window). Then, in place: t2 stamped on arrival, MACs/IPs/ports swapped,
 * kind set to REPLY, t3 stamped, the reply's MAC over t2/t3, UDP checksum updated, XDP_TX.
 * Every other datagram to the sync port is counted by reason and dropped, never answered;
 * all other traffic passes untouched. See sync/SECURITY.md.
 * t2/t3 go through the host clock of clock.h, so a simulated host injects its known
 * offset and drift exactly as its agent's probes do.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "clock.h"  /* producers/bpf: the same injected clock as the agent */
#include "sync_parse.h"

const volatile __u16 sync_port = 0;  /* host byte order */

/* probe ids answered recently (value: epoch). A replay inside the key window finds its id
 * here; user space sizes it (set_max_entries) to hold a key window of probes. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} seen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct sync_addr);
	__type(value, __u8);
} allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct sync_addr);
	__type(value, __u8);
} local SEC(".maps");

/* The reply MAC and checksum are finished after the t3 stamp: t3 must be the last word
 * the MAC covers, and t3 and mac the last 16 bytes of the probe. */
_Static_assert(__builtin_offsetof(struct sync_probe, t3_ns) == 8 * (SYNC_MAC_WORDS - 1) &&
	       __builtin_offsetof(struct sync_probe, mac) == 32 + 8 &&
	       sizeof(struct sync_probe) == 48,
	       "struct sync_probe: t3_ns then mac must close it");

#define LS_NCOUNTERS RESP_NCOUNTERS
#include "counters.bpf.h"

static __always_inline __u16 csum_fold(__s64 sum)
{
	__u64 s = (__u64)sum;

	s = (s & 0xffffffff) + (s >> 32);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)~s;
}

SEC("xdp")
int sync_responder(struct xdp_md *ctx)
{
	__u64 arrival = bpf_ktime_get_ns();
	struct sync_frame f;
	int parsed = sync_parse(ctx, &f);
	struct sync_probe before, after;
	struct sync_addr src, dst;
	struct sync_key *key;
	int why;
	struct ls_sip sip;
	unsigned char mac[SYNC_ETH_ALEN];
	__s64 sum = 0;
	__u16 port;
	__u32 i;
	int csum;

	if (parsed == SYNC_NOT_UDP || f.udp->dest != bpf_htons(sync_port))
		return XDP_PASS;
	sync_dst_key(&f, &dst);
	if (!bpf_map_lookup_elem(&local, &dst))
		return XDP_PASS; /* for another host behind this one: forward it */
	ls_count(RESP_PROBES);
	if (parsed != SYNC_PROBE || f.probe->magic != bpf_htonl(SYNC_MAGIC) ||
	    f.probe->version != SYNC_VERSION || f.probe->kind != SYNC_KIND_REQUEST) {
		ls_count(RESP_MALFORMED);
		return XDP_DROP;
	}
	sync_src_key(&f, &src);
	if (!bpf_map_lookup_elem(&allow, &src)) {
		ls_count(RESP_BAD_SOURCE);
		return XDP_DROP;
	}
	before = *f.probe;
	key = sync_verify(&before, &why);
	if (!key) {
		ls_count(why == SYNC_STALE_KEY ? RESP_STALE_KEY : RESP_BAD_MAC);
		return XDP_DROP;
	}
	/* Only a verified probe is remembered: forgeries cannot flush the replay cache. */
	if (bpf_map_update_elem(&seen, &before.probe_id, &before.epoch, BPF_NOEXIST)) {
		ls_count(RESP_REPLAY);
		return XDP_DROP;
	}

	/* Swapping addresses and ports leaves the UDP checksum unchanged (the one's
	 * complement sum is commutative); only the payload rewrite needs a fix-up. */
	__builtin_memcpy(mac, f.eth->h_dest, SYNC_ETH_ALEN);
	__builtin_memcpy(f.eth->h_dest, f.eth->h_source, SYNC_ETH_ALEN);
	__builtin_memcpy(f.eth->h_source, mac, SYNC_ETH_ALEN);
	if (!f.v6) {
		__u32 a = f.ip4->saddr;

		f.ip4->saddr = f.ip4->daddr;
		f.ip4->daddr = a;
	} else {
		struct in6_addr a = f.ip6->saddr;

		f.ip6->saddr = f.ip6->daddr;
		f.ip6->daddr = a;
	}
	port = f.udp->source;
	f.udp->source = f.udp->dest;
	f.udp->dest = port;
	after = before;
	after.kind = SYNC_KIND_REPLY;
	after.t2_ns = ls_clock(arrival);
	f.probe->kind = after.kind;
	f.probe->t2_ns = after.t2_ns;
	/* Everything that does not depend on t3 happens before it is stamped: the reply MAC
	 * absorbs the words before t3, and the checksum takes the rewritten head. What is left
	 * after the stamp (t3's own word, SipHash's finalisation, two stores, a 16-byte
	 * checksum fix-up; ~150 ns measured) counts as return delay: an asymmetry the bound
	 * covers, kept small because it biases the offset by half of it. */
	ls_sip_init(&sip, key->k0, key->k1);
#pragma unroll
	for (i = 0; i < SYNC_MAC_WORDS - 1; i++)
		ls_sip_word(&sip, ((__u64 *)&after)[i]);
	csum = !f.v6 && f.udp->check == 0;   /* IPv4 without a UDP checksum stays without one */
	if (!csum)
		sum = bpf_csum_diff((__be32 *)&before, 32, (__be32 *)&after, 32,
				    (__u16)~f.udp->check);
	/* Pure arithmetic could otherwise be scheduled after the t3 stamp below. */
	asm volatile("" : "+r"(sip.v0), "+r"(sip.v1), "+r"(sip.v2), "+r"(sip.v3), "+r"(sum)
		     :: "memory");

	after.t3_ns = ls_clock(bpf_ktime_get_ns());
	ls_sip_word(&sip, after.t3_ns);
	after.mac = ls_sip_final(&sip, SYNC_MAC_WORDS);
	f.probe->t3_ns = after.t3_ns;
	f.probe->mac = after.mac;
	if (!csum) {
		sum = bpf_csum_diff((__be32 *)&before.t3_ns, 16, (__be32 *)&after.t3_ns, 16, sum);
		f.udp->check = csum_fold(sum) ?: 0xffff;
	}
	ls_count(RESP_ANSWERED);
	return XDP_TX;
}

SEC("xdp")
int sync_pass(struct xdp_md *ctx)
{
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "GPL";
