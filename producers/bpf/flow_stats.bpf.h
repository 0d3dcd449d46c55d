/* Per-flow counters: every byte and segment of a covered flow, added up per CPU in one map
 * on paths the points already run (sock_send/sock_recv, dev_xmit/dev_rx, the retransmit
 * marker, the drop point); the agent reads the map once an interval and sends the
 * differences (producers/flow_stats.py); at the socket calls also the calling process,
 * the owner of the flow's socket (producers/owners.py). One lookup (and on a flow's first
 * packet per CPU one insert) per packet or socket call; a full map is counted, never
 * silent. */
#ifndef LATSCOPE_FLOW_STATS_BPF_H
#define LATSCOPE_FLOW_STATS_BPF_H

volatile const __u8 flow_stats_on = 1;       /* 0: count nothing (agent --no-flow-stats) */

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ls_fs_key);
	__type(value, struct ls_fs_val);
} flow_stats SEC(".maps");

static __always_inline void ls_fs_bump(struct ls_fs_val *v, __u64 bytes, __u64 count,
					__u32 tgid)
{
	v->bytes += bytes;
	v->count += count;
	if (tgid)        /* a constant 0 off the socket calls: no store there */
		v->tgid = tgid;
}

static __always_inline void ls_fs_add(const struct ls_hit *h, __u32 netns, __u32 ifindex,
				      __u8 kind, __u64 bytes, __u64 count)
{
	struct ls_fs_key k;
	struct ls_fs_val *v, init = {.bytes = bytes, .count = count};
	__u32 tgid = 0;

	if (!flow_stats_on)
		return;
	/* the socket calls run in their process: its owner, without a walk of /proc */
	if (kind == LS_FS_SEND || kind == LS_FS_RECV)
		tgid = bpf_get_current_pid_tgid() >> 32;
	init.tgid = tgid;
	__builtin_memset(&k, 0, sizeof(k));
	__builtin_memcpy(k.saddr, h->saddr, 16);
	__builtin_memcpy(k.daddr, h->daddr, 16);
	k.netns = netns;
	k.ifindex = ifindex;
	k.sport = h->sport;
	k.dport = h->dport;
	k.family = h->family;
	k.proto = h->proto;
	k.kind = kind;
	v = bpf_map_lookup_elem(&flow_stats, &k);
	if (v) {
		ls_fs_bump(v, bytes, count, tgid);
		return;
	}
	if (bpf_map_update_elem(&flow_stats, &k, &init, BPF_NOEXIST)) {
		/* nested on this CPU (an interrupt added it meanwhile) or full */
		v = bpf_map_lookup_elem(&flow_stats, &k);
		if (v)
			ls_fs_bump(v, bytes, count, tgid);
		else
			ls_count(LS_C_FLOW_FULL);
	}
}

/* Segments in an skb: GSO/GRO packets hold several (skb_shinfo()->gso_segs), others one. */
static __always_inline __u32 ls_skb_segs(const struct sk_buff *skb, const int m)
{
	__u16 segs = LS_CAST(LS_RD(m, skb, head) + LS_RD(m, skb, end),
			     struct skb_shared_info)->gso_segs;

	return segs ? segs : 1;
}

#endif
