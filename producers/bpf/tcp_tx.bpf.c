/* The TCP transmit point, and the resend mark. TCP has built the segment (sequence number
 * known) and is about to hand it to IP. No tracepoint sits there; the sock_ops header-option
 * callbacks inside __tcp_transmit_skb do. They only run for sockets that ask for them, so the
 * program asks (at connection establishment) only for sockets of covered namespaces.
 *
 * By default the point only observes: HDR_OPT_LEN_CB (which asks how many option bytes to
 * add) reports the segment and reserves none, so the kernel skips WRITE_HDR_OPT_CB and the
 * segment leaves as it would without LatScope. The segment's sequence number is read from
 * the skb's TCP control block (bpf_cast_to_kern_ctx: the header is not built yet).
 *
 * With resend_mark (opt-in: it changes the traffic it measures), the program reserves 8
 * option bytes on data segments, and WRITE_HDR_OPT_CB reports the segment and writes the
 * resend mark (latscope.h: RFC 6994 experimental option) into every segment this socket's
 * TCP sends again, NOPs otherwise: every point on every host that parses the segment
 * (forwarders and receivers have no retransmit tracepoint) then knows the copy is a resend.
 * Without it only the sender knows (the retrans point and this one's flag).
 * "Again": the segment starts below snd_nxt (a retransmission), or below the highest byte
 * this socket ever handed to IP (sk storage): a segment the local qdisc dropped, which TCP
 * sends anew as new data without counting a retransmission. Such a retry may take in bytes
 * never sent (TCP sizes it anew); the mark's end tells them apart.
 * Namespaces are known by their netns cookie here (sock_ops has no kernel socket pointer):
 * user space fills netns_cookies with cookie -> inode for the namespaces it covers.
 * Where the kernel has them, fentry/kprobe on __tcp_transmit_skb (tcp_fn.bpf.c) serve the
 * point when this hook is refused (without the mark: then only the sender knows resends).
 * Hooks:
 *   tcp_tx  sockops (cgroup v2 root): ACTIVE/PASSIVE_ESTABLISHED_CB set the header-option
 *           flag; HDR_OPT_LEN_CB reports a sampled data segment (observing), or reserves 8
 *           bytes in data segments (resend_mark); WRITE_HDR_OPT_CB (resend_mark only)
 *           marks a resent segment and reports a sampled one
 */
#include "common.bpf.h"

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 256);
	__type(key, __u64);
	__type(value, __u32);
} netns_cookies SEC(".maps");

/* Per socket: the end of the highest byte range handed to IP so far (set: hw is valid). */
struct sent_hw {
	__u32 hw;
	__u32 set;
};

struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct sent_hw);
} sent SEC(".maps");

/* The end of [seq, seq+len)'s bytes below `sent` (the end of what was sent before): seq
 * if none are (a first transmission), at most seq+len. */
static __always_inline __u32 clamp_end(__u32 sent, __u32 seq, __u32 len)
{
	if ((__s32)(sent - seq) <= 0)
		return seq;
	return (__s32)(sent - (seq + len)) > 0 ? seq + len : sent;
}

/* The end of the data segment [seq, seq+len)'s bytes that were sent before: those below
 * snd_nxt (a retransmission) or below the highest byte ever handed to IP (clamp_end).
 * Also moves the socket's high-water mark. */
static __always_inline __u32 resent_end(struct bpf_sock_ops *skops, __u32 seq, __u32 len)
{
	struct bpf_sock *sk = skops->sk;
	struct sent_hw *st;
	__u32 end = skops->snd_nxt;

	if (sk) {
		st = bpf_sk_storage_get(&sent, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
		if (st) {
			if (st->set && (__s32)(st->hw - end) > 0)
				end = st->hw;
			if (!st->set || (__s32)(seq + len - st->hw) > 0) {
				st->hw = seq + len;
				st->set = 1;
			}
		}
	}
	return clamp_end(end, seq, len);
}

static __always_inline __u32 *ours(struct bpf_sock_ops *skops)
{
	__u64 cookie = bpf_get_netns_cookie(skops);
	return bpf_map_lookup_elem(&netns_cookies, &cookie);
}

extern void *bpf_cast_to_kern_ctx(void *obj) __ksym;

/* Report the data segment [seq, seq+len), which holds a sampled byte; flags: LS_F_RESENT.
 * The first copy of a byte the socket tracks (wait.bpf.h) carries its causes (one per
 * segment; others it holds are let go at the next event). */
static __always_inline void report(struct bpf_sock_ops *skops, __u32 netns, __u32 seq,
				   __u32 len, __u16 dport, __u32 resent_end, __u8 flags)
{
	struct ls_hit h = {};
	struct bpf_sock *sk = skops->sk;
	struct ls_wait_st *w = 0;
	__u32 wait[LS_W_MAX];
	/* where this segment's first copies start: past its resent bytes, if any */
	__u32 fresh = (flags & LS_F_RESENT) && (__s32)(resent_end - seq) > 0 ? resent_end : seq;

	if (sk)
		w = bpf_sk_storage_get(&sock_wait, sk, 0, 0);
	h.seq = seq;
	h.len = len;
	h.dport = dport;
	h.resent_end = resent_end;
	h.flags = flags;
	h.sport = skops->local_port;
	h.proto = IPPROTO_TCP;
	if (skops->family == AF_INET) {
		h.family = 4;
		*(__u32 *)h.saddr = skops->local_ip4;
		*(__u32 *)h.daddr = skops->remote_ip4;
	} else {
		__u32 *s = (__u32 *)h.saddr, *d = (__u32 *)h.daddr;
		h.family = 6;
		s[0] = skops->local_ip6[0]; s[1] = skops->local_ip6[1];
		s[2] = skops->local_ip6[2]; s[3] = skops->local_ip6[3];
		d[0] = skops->remote_ip6[0]; d[1] = skops->remote_ip6[1];
		d[2] = skops->remote_ip6[2]; d[3] = skops->remote_ip6[3];
		if (d[0] == 0 && d[1] == 0 && d[2] == bpf_htonl(0xffff)) {   /* v4-mapped */
			h.family = 4;
			s[0] = s[3];
			d[0] = d[3];
			s[2] = s[3] = d[2] = d[3] = 0;
		}
	}
	if (w && w->s_last) {
		int i = ls_wait_find(w->s, seq, len, fresh);

		if (i >= 0 && i < LS_WAIT_SLOTS) {
			__u32 b = 0;

			ls_wait_take(w->s, &w->s_last, i, wait, &b);
			ls_emit_tracked(&h, LS_TCP_TX, netns, b, wait);
			return;
		}
	}
	ls_emit_at(&h, LS_TCP_TX, 0, netns, 0, 0);
}

/* Observing: the segment about to be built, from its skb (no header yet: skb_len is the
 * payload, the sequence number is in the TCP control block). Cheapest test first: most
 * segments hold no sampled byte. A resend is known by snd_nxt alone here (TCP advances it
 * after this callback): a retry of a segment the local qdisc dropped is new data to TCP,
 * and the grouping knows it as a second copy of the byte at this point. */
static __always_inline void observe(struct bpf_sock_ops *skops)
{
	struct bpf_sock_ops_kern *k;
	struct tcp_skb_cb *tcb;
	__u32 *netns, seq, len = skops->skb_len, end;

	if (!len)
		return;                    /* a pure ACK, or tcp_current_mss() sizing (no skb) */
	k = bpf_cast_to_kern_ctx(skops);
	if (!k->skb)
		return;
	tcb = (struct tcp_skb_cb *)&k->skb->cb[0];
	seq = tcb->seq;                   /* a typed load: no helper call */
	if (!ls_sampled(seq, len))
		return;
	netns = ours(skops);
	if (!netns)
		return;
	end = clamp_end(skops->snd_nxt, seq, len);
	report(skops, *netns, seq, len, bpf_ntohl(skops->remote_port) & 0xffff, end,
	       end != seq ? LS_F_RESENT : 0);
}

SEC("sockops")
int tcp_tx(struct bpf_sock_ops *skops)
{
	struct bpf_sock *sk;
	struct tcphdr *th;
	__u32 *netns, len, seq, end;
	__u16 dport;
	__u8 flags = 0;

	switch (skops->op) {
	case BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB:
	case BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB:
		if (ours(skops) && ls_ports_ok(skops->local_port, bpf_ntohl(skops->remote_port)))
			bpf_sock_ops_cb_flags_set(skops, skops->bpf_sock_ops_cb_flags |
						  BPF_SOCK_OPS_WRITE_HDR_OPT_CB_FLAG);
		return 1;
	case BPF_SOCK_OPS_HDR_OPT_LEN_CB:
		/* every segment and every sizing call: an event for a tracked byte */
		sk = skops->sk;
		if (sk)
			ls_wait_event(sk);
		if (!resend_mark) {
			observe(skops);
			return 1;
		}
		/* skb_len is the payload here (no header yet). Pure ACKs (no payload, flags
		 * set) get no room, so the kernel skips WRITE_HDR_OPT_CB for them: half the
		 * runs on a bulk flow's ACKs. No skb at all (flags 0) is tcp_current_mss()
		 * sizing segments: it must count the room data segments will get. */
		if ((skops->skb_len || !skops->skb_tcp_flags) && ours(skops))
			bpf_reserve_hdr_opt(skops, LS_OPT_LEN, 0);
		return 1;
	case BPF_SOCK_OPS_WRITE_HDR_OPT_CB:
		break;
	default:
		return 1;
	}
	netns = ours(skops);
	if (!netns)
		return 1;
	th = (struct tcphdr *)(long)skops->skb_data;
	if ((void *)(th + 1) > (void *)(long)skops->skb_data_end)
		return 1;
	len = skops->skb_len;
	if (len <= th->doff * 4)
		return 1;                  /* no data */
	len -= th->doff * 4;
	seq = bpf_ntohl(th->seq);
	dport = bpf_ntohs(th->dest);       /* th is invalid once an option is stored */
	end = resent_end(skops, seq, len);
	if (end != seq) {
		__u32 be = bpf_htonl(end);
		__u8 mark[LS_OPT_LEN] = {LS_OPT_KIND, LS_OPT_LEN, LS_OPT_EXID >> 8,
					 LS_OPT_EXID & 0xff};

		__builtin_memcpy(&mark[4], &be, 4);
		/* Counted either way: a resend left unmarked is a loss of information. */
		if (bpf_store_hdr_opt(skops, mark, sizeof(mark), 0)) {
			ls_count(LS_C_MARK_FAILED);
		} else {
			ls_count(LS_C_RESENT);
			flags = LS_F_RESENT;
		}
	}
	if (ls_sampled(seq, len))
		report(skops, *netns, seq, len, dport, end, flags);
	return 1;
}
