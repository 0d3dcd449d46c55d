/* Every kernel-version quirk the probes depend on lives here, nowhere else.
 * - sk_protocol became a plain __u16 in 5.6 (a bitfield before): read it either way.
 * - sk_shutdown: a bitfield before 6.4, a byte since.
 * - TCP's per-skb control block (seq/end_seq/flags) lives in skb->cb; its offset is CO-RE.
 * - skb->network_header is 0xffff ("unset") until the stack sets it; RX device points run
 *   before __netif_receive_skb_core resets it, so they use skb->data instead. */
#ifndef LATSCOPE_COMPAT_H
#define LATSCOPE_COMPAT_H

#include "vmlinux.h"
#include <bpf/bpf_core_read.h>

struct sock___old {
	unsigned int sk_protocol:8;
} __attribute__((preserve_access_index));

static __always_inline __u16 ls_sk_protocol(const struct sock *sk)
{
	if (bpf_core_field_size(sk->sk_protocol) == sizeof(__u16))
		return BPF_CORE_READ(sk, sk_protocol);
	return BPF_CORE_READ_BITFIELD_PROBED((struct sock___old *)sk, sk_protocol);
}

/* sk_shutdown was a 2-bit bitfield before 6.4; the probed bitfield read handles both. */
static __always_inline __u8 ls_sk_shutdown(const struct sock *sk)
{
	return BPF_CORE_READ_BITFIELD_PROBED(sk, sk_shutdown);
}

static __always_inline struct tcp_skb_cb *ls_tcp_cb(const struct sk_buff *skb)
{
	return (struct tcp_skb_cb *)((void *)skb + bpf_core_field_offset(struct sk_buff, cb));
}

/* Offset of the network header from skb->head, for a point that may run before it is set. */
static __always_inline __u32 ls_skb_nh_off(const struct sk_buff *skb, int use_data)
{
	__u16 nh = BPF_CORE_READ(skb, network_header);
	if (use_data || nh == (__u16)~0U)
		return (__u32)((unsigned long)BPF_CORE_READ(skb, data) -
			       (unsigned long)BPF_CORE_READ(skb, head));
	return nh;
}

#endif
