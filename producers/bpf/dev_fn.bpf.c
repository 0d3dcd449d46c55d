/* Device points at kernel functions: for kernels whose device tracepoints serve neither as
 * tp_btf nor as raw_tp. Kept out of dev.bpf.c because a kernel that refuses one of these
 * (fentry needs BPF trampolines, kprobes CONFIG_KPROBES) must still load that object whole.
 * Thin entries into dev.bpf.h; schemas/points.py orders every candidate.
 * Hooks:
 *   dev_queue  fentry/__dev_queue_xmit   function entry: before tc egress (the tracepoint
 *                                        fires after it)
 *              kprobe/__dev_queue_xmit
 * dev_xmit and dev_rx have none: their tracepoints sit in the inlined xmit_one and in the
 * static __netif_receive_skb_core, whose skb comes through a pointer to a pointer.
 */
#include "dev.bpf.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "GPL";

SEC("fentry/__dev_queue_xmit")
int BPF_PROG(dev_queue_fentry, struct sk_buff *skb)
{
	return dev_point(skb, skb->dev, LS_DEV_QUEUE, 0, LS_FS_NONE, LS_BTF);
}

SEC("kprobe/__dev_queue_xmit")
int BPF_KPROBE(dev_queue_kprobe, struct sk_buff *skb)
{
	return dev_point(skb, BPF_CORE_READ(skb, dev), LS_DEV_QUEUE, 0, LS_FS_NONE, LS_RAW);
}
