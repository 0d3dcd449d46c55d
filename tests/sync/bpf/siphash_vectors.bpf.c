// SPDX-License-Identifier: GPL-2.0
/* Test-only: sync/bpf/siphash.h as the verifier and the JIT see it, for the reference
 * vectors (tests/sync/test_mac.py compiles this and runs it with BPF_PROG_TEST_RUN).
 *
 * Hooks: XDP (siphash_vectors), only ever run by BPF_PROG_TEST_RUN, never attached.
 * Packet in: 16-byte key, then a message of whole 64-bit words (at most
 * SIPHASH_MAX_WORDS). Packet out: the same, with the first 8 bytes replaced by the
 * SipHash-2-4 of the message (little-endian). XDP_TX on success, XDP_ABORTED otherwise.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "siphash.h"

SEC("xdp")
int siphash_vectors(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	__u64 *key = data;
	__u64 words[SIPHASH_MAX_WORDS] = {};
	__u32 i, n = 0;

	if ((void *)(key + 2) > end)
		return XDP_ABORTED;
#pragma unroll
	for (i = 0; i < SIPHASH_MAX_WORDS; i++) {
		__u64 *w = (__u64 *)(key + 2) + i;

		if ((void *)(w + 1) > end)
			break;
		words[i] = *w;
		n = i + 1;
	}
	key[0] = ls_siphash24(key[0], key[1], words, n);
	return XDP_TX;
}

char LICENSE[] SEC("license") = "GPL";
