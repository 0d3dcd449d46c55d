/* Test hook for producers/bpf/clock.h: runs ls_clock() on ktime values handed in through
 * BPF_PROG_TEST_RUN, so tests can hold the BPF arithmetic to latscope.clock's exactly.
 * Hooks:
 *   xdp (clock_check)   never attached; run on a test packet that carries 8 ktime values
 *                       and gets the 8 host times written after them
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "clock.h"

char LICENSE[] SEC("license") = "GPL";

struct clock_args {
	__u64 ktime[8];
	__u64 out[8];
};

SEC("xdp")
int clock_check(struct xdp_md *ctx)
{
	struct clock_args *a = (void *)(long)ctx->data;

	if ((void *)(a + 1) > (void *)(long)ctx->data_end)
		return XDP_ABORTED;
	for (int i = 0; i < 8; i++)
		a->out[i] = ls_clock(a->ktime[i]);
	return XDP_TX;
}
