/* Every kernel-version quirk the probes depend on lives here, nowhere else.
 * - sk_protocol and sk_shutdown are plain fields (a __u16 since 5.6, a byte since 6.4;
 *   bitfields before): read through ls_sk_protocol/ls_sk_shutdown, the one place an older
 *   kernel would need BPF_CORE_READ_BITFIELD_PROBED.
 * - TCP's per-skb control block (seq/end_seq/flags) lives in skb->cb; its offsets are CO-RE.
 * - skb->network_header is 0xffff ("unset") until the stack sets it; RX device points run
 *   before __netif_receive_skb_core resets it, so they use skb->data instead. */
#ifndef LATSCOPE_COMPAT_H
#define LATSCOPE_COMPAT_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

/* Plain fields on the kernels this targets (see above); m: read mode (common.bpf.h). */
static __always_inline __u16 ls_sk_protocol(const struct sock *sk, const int m)
{
	return m ? BPF_CORE_READ(sk, sk_protocol) : sk->sk_protocol;
}

static __always_inline __u8 ls_sk_shutdown(const struct sock *sk, const int m)
{
	return m ? BPF_CORE_READ(sk, sk_shutdown) : sk->sk_shutdown;
}

struct ls_tcp_range {
	__u32 seq;
	__u32 end_seq;
	__u16 segs;
	__u8 flags;
};

/* seq, end_seq, tcp_gso_segs (tcp_skb_pcount: the segments TCP counts for this skb; the
 * shared info's gso_segs may be stale on a resent skb, whose last send was a copy) and
 * tcp_flags of TCP's control block in skb->cb (CO-RE offsets). Typed mode (m == 0)
 * loads them directly (the verifier checks them through BTF: no helper call); untyped mode
 * reads the block's first 16 bytes, where they sit on every kernel LatScope supports, in
 * one probe read. */
static __always_inline int ls_tcp_cb_range(const struct sk_buff *skb, struct ls_tcp_range *r,
					   const int m)
{
	__u8 buf[16];
	__u32 o_seq = bpf_core_field_offset(struct tcp_skb_cb, seq);
	__u32 o_end = bpf_core_field_offset(struct tcp_skb_cb, end_seq);
	__u32 o_fl = bpf_core_field_offset(struct tcp_skb_cb, tcp_flags);
	__u32 o_segs = bpf_core_field_offset(struct tcp_skb_cb, tcp_gso_segs);

	if (!m) {
		const struct tcp_skb_cb *tcb = (const void *)skb->cb;

		r->seq = tcb->seq;
		r->end_seq = tcb->end_seq;
		r->segs = tcb->tcp_gso_segs;
		r->flags = tcb->tcp_flags;
		return 0;
	}
	if (o_seq > 12 || o_end > 12 || o_fl > 15 || o_segs > 14)
		return -1;
	if (bpf_probe_read_kernel(buf, sizeof(buf),
				  (void *)skb + bpf_core_field_offset(struct sk_buff, cb)))
		return -1;
	r->seq = *(__u32 *)(buf + o_seq);
	r->end_seq = *(__u32 *)(buf + o_end);
	r->segs = *(__u16 *)(buf + o_segs);
	r->flags = buf[o_fl];
	return 0;
}

/* Offset of the network header from skb->head, for a point that may run before it is set. */
static __always_inline __u32 ls_skb_nh_off(const struct sk_buff *skb, int use_data, const int m)
{
	__u16 nh;

	if (!use_data) {
		nh = m ? BPF_CORE_READ(skb, network_header) : skb->network_header;
		if (nh != (__u16)~0U)
			return nh;
	}
	return m ? (__u32)((unsigned long)BPF_CORE_READ(skb, data) -
			   (unsigned long)BPF_CORE_READ(skb, head))
		 : (__u32)((unsigned long)skb->data - (unsigned long)skb->head);
}

#endif
