// SPDX-License-Identifier: GPL-2.0
/* LatScope clock sync manager (the reference clock; no injection).
 *
 * Hooks:
 *   tp_btf/net_dev_start_xmit (sync_t1): recognises an outgoing probe as the driver starts
 *     sending it (after the qdisc), on the watched devices only (netns inode + ifindex),
 *     and stamps a provisional t1.
 *   tp_btf/net_dev_xmit (sync_t1_sent): the driver has taken the same skb (rc == OK): t1
 *     is re-stamped here, the closest point to the wire the kernel reports. The skb is
 *     matched by address only, never read again (it may be gone after the driver).
 *   XDP (sync_t4) on the same devices: t4 of a reply on arrival; the completed
 *     exchange t1..t4 goes to the `samples` ring buffer and the reply is dropped here.
 * Probes and replies are matched by probe_id (random per probe). A reply counts only with
 * this protocol version, an installed key for its epoch, a MAC that verifies under it, a
 * pending departure, and a source equal to the address that probe went to; each failure
 * is counted by reason and dropped. A sample with t3 < t2 or a negative delay is sent up
 * flagged SYNC_SAMPLE_SUSPICIOUS (counted per host, never estimated). See sync/SECURITY.md.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_endian.h>
#include "sync_parse.h"

const volatile __u16 sync_port = 0;  /* host byte order */

struct dev_key {
	__u32 netns_ino;
	__u32 ifindex;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 64);
	__type(key, struct dev_key);
	__type(value, __u8);
} devices SEC(".maps");

/* Probes between start_xmit and xmit right now: lets sync_t1_sent, which runs for every
 * packet of every device, skip the map lookup in the common case. An skb the driver
 * never reports keeps it above zero; that only costs the fast path, never correctness. */
__u64 inflight_n = 0;

/* skb address -> probe_id, between start_xmit and xmit (one CPU, microseconds). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u64);
	__type(value, __u64);
} inflight SEC(".maps");

/* A probe on its way: when it left and where to (the reply must come from there). */
struct departure {
	__u64 t1_ns;
	struct sync_addr dst;
};

/* probe_id -> departure; LRU so probes whose reply never came age out by themselves. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, struct departure);
} departures SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} samples SEC(".maps");

#define LS_NCOUNTERS MGR_NCOUNTERS
#include "counters.bpf.h"

SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(sync_t1, const struct sk_buff *skb, const struct net_device *dev)
{
	__u64 now = bpf_ktime_get_ns();
	/* Runs for every packet sent on the machine: plain BTF loads (no probe_read) and one
	 * lookup before anything else. */
	struct dev_key k = {
		.netns_ino = dev->nd_net.net->ns.inum,
		.ifindex = dev->ifindex,
	};
	unsigned char *head;
	__u16 nh, th, proto;
	struct udphdr udp;
	struct sync_probe probe;
	struct departure dep;
	__u64 skb_addr;
	__u8 l4proto;

	if (!bpf_map_lookup_elem(&devices, &k))
		return 0;
	head = BPF_CORE_READ(skb, head);
	nh = BPF_CORE_READ(skb, network_header);
	th = BPF_CORE_READ(skb, transport_header);
	proto = BPF_CORE_READ(skb, protocol);
	if (proto == bpf_htons(SYNC_ETH_P_IP)) {
		struct iphdr ip4;

		if (bpf_probe_read_kernel(&ip4, sizeof(ip4), head + nh))
			return 0;
		l4proto = ip4.protocol;
		th = nh + ip4.ihl * 4;
		sync_key_of(&dep.dst, 0, &ip4.daddr);
	} else if (proto == bpf_htons(SYNC_ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return 0;
		l4proto = ip6.nexthdr;
		th = nh + sizeof(ip6);
		sync_key_of(&dep.dst, 1, &ip6.daddr);
	} else {
		return 0;
	}
	if (l4proto != SYNC_IPPROTO_UDP)
		return 0;
	if (bpf_probe_read_kernel(&udp, sizeof(udp), head + th) ||
	    udp.dest != bpf_htons(sync_port))
		return 0;
	if (bpf_probe_read_kernel(&probe, sizeof(probe), head + th + sizeof(udp)))
		return 0;
	if (probe.magic != bpf_htonl(SYNC_MAGIC) || probe.version != SYNC_VERSION ||
	    probe.kind != SYNC_KIND_REQUEST)
		return 0;
	dep.t1_ns = now;
	bpf_map_update_elem(&departures, &probe.probe_id, &dep, BPF_ANY);
	skb_addr = (__u64)skb;
	if (bpf_map_update_elem(&inflight, &skb_addr, &probe.probe_id, BPF_NOEXIST) == 0)
		__sync_fetch_and_add(&inflight_n, 1);
	ls_count(MGR_T1);
	return 0;
}

SEC("tp_btf/net_dev_xmit")
int BPF_PROG(sync_t1_sent, const struct sk_buff *skb, int rc, const struct net_device *dev,
	     unsigned int len)
{
	__u64 now = bpf_ktime_get_ns();
	__u64 skb_addr = (__u64)skb;
	struct departure *dep;
	__u64 *id;

	if (!inflight_n)
		return 0;
	id = bpf_map_lookup_elem(&inflight, &skb_addr);
	if (!id)
		return 0;
	dep = bpf_map_lookup_elem(&departures, id);
	if (dep && rc == 0) /* NETDEV_TX_OK; otherwise the provisional stamp stays */
		dep->t1_ns = now;
	if (bpf_map_delete_elem(&inflight, &skb_addr) == 0)
		__sync_fetch_and_sub(&inflight_n, 1);
	return 0;
}

SEC("xdp")
int sync_t4(struct xdp_md *ctx)
{
	__u64 arrival = bpf_ktime_get_ns();
	struct sync_frame f;
	struct sync_sample *s;
	struct sync_probe p;
	struct sync_addr src;
	struct departure dep, *d;
	struct sync_key *key;
	int why;
	__u32 flags = 0;

	if (sync_parse(ctx, &f) != SYNC_PROBE || f.udp->source != bpf_htons(sync_port) ||
	    f.probe->magic != bpf_htonl(SYNC_MAGIC) || f.probe->kind != SYNC_KIND_REPLY)
		return XDP_PASS;
	ls_count(MGR_REPLIES);
	if (f.probe->version != SYNC_VERSION) {
		ls_count(MGR_MALFORMED);
		return XDP_DROP;
	}
	p = *f.probe;
	key = sync_verify(&p, &why);
	if (!key) {
		ls_count(why == SYNC_STALE_KEY ? MGR_STALE_KEY : MGR_BAD_MAC);
		return XDP_DROP;
	}
	d = bpf_map_lookup_elem(&departures, &p.probe_id);
	if (!d) {
		ls_count(MGR_NO_T1);
		return XDP_DROP;
	}
	dep = *d;
	sync_src_key(&f, &src);
	if (!sync_addr_eq(&src, &dep.dst)) {
		/* the pending probe stays: its true reply may still come */
		ls_count(MGR_BAD_SOURCE);
		return XDP_DROP;
	}
	bpf_map_delete_elem(&departures, &p.probe_id);
	/* Impossible for honest clocks: the host claims it sent before it received, or that
	 * it held the probe longer than the whole round trip took. */
	if (p.t3_ns < p.t2_ns || arrival - dep.t1_ns < p.t3_ns - p.t2_ns) {
		ls_count(MGR_SUSPICIOUS);
		flags |= SYNC_SAMPLE_SUSPICIOUS;
	}
	s = bpf_ringbuf_reserve(&samples, sizeof(*s), 0);
	if (!s) {
		ls_count(MGR_RINGBUF_FULL);
		return XDP_DROP;
	}
	s->probe_id = p.probe_id;
	s->t1_ns = dep.t1_ns;
	s->t2_ns = p.t2_ns;
	s->t3_ns = p.t3_ns;
	s->t4_ns = arrival;
	s->ifindex = ctx->ingress_ifindex;
	s->flags = flags;
	bpf_ringbuf_submit(s, 0);
	ls_count(MGR_SAMPLES);
	return XDP_DROP;
}

char LICENSE[] SEC("license") = "GPL";
