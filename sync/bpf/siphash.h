/* SipHash-2-4 (Aumasson & Bernstein) over whole little-endian 64-bit words, for BPF.
 *
 * The MAC of the sync protocol (sync.h): probes and replies are a whole number of words,
 * so only the word-aligned case is implemented; the length byte of the final block is
 * still 8 * nwords, so results equal the reference implementation's for those lengths
 * (held to its published vectors and to latscope.sync.mac by tests/sync/test_mac.py).
 * Plain 64-bit ALU ops and a loop bounded by SIPHASH_MAX_WORDS: every kernel verifier
 * since 5.3 accepts it, no helper calls.
 */
#ifndef LATSCOPE_SIPHASH_H
#define LATSCOPE_SIPHASH_H

#define SIPHASH_MAX_WORDS 8

#define SIP_ROTL(x, b) (((x) << (b)) | ((x) >> (64 - (b))))
#define SIP_ROUND(v0, v1, v2, v3)                                                  \
	do {                                                                       \
		v0 += v1; v1 = SIP_ROTL(v1, 13); v1 ^= v0; v0 = SIP_ROTL(v0, 32); \
		v2 += v3; v3 = SIP_ROTL(v3, 16); v3 ^= v2;                         \
		v0 += v3; v3 = SIP_ROTL(v3, 21); v3 ^= v0;                         \
		v2 += v1; v1 = SIP_ROTL(v1, 17); v1 ^= v2; v2 = SIP_ROTL(v2, 32); \
	} while (0)

/* Incremental form: init, one call per message word, final. A caller can absorb the words
 * it knows early and leave only the last word and the finalisation for later (the
 * responder does so around its t3 stamp, to keep work out of the measured return path). */
struct ls_sip {
	__u64 v0, v1, v2, v3;
};

static __always_inline void ls_sip_init(struct ls_sip *s, __u64 k0, __u64 k1)
{
	s->v0 = 0x736f6d6570736575ULL ^ k0;
	s->v1 = 0x646f72616e646f6dULL ^ k1;
	s->v2 = 0x6c7967656e657261ULL ^ k0;
	s->v3 = 0x7465646279746573ULL ^ k1;
}

static __always_inline void ls_sip_word(struct ls_sip *s, __u64 m)
{
	__u64 v0 = s->v0, v1 = s->v1, v2 = s->v2, v3 = s->v3 ^ m;

	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	s->v0 = v0 ^ m;
	s->v1 = v1;
	s->v2 = v2;
	s->v3 = v3;
}

/* The hash of the nwords words absorbed so far. */
static __always_inline __u64 ls_sip_final(struct ls_sip *s, __u32 nwords)
{
	__u64 b = ((__u64)nwords * 8) << 56;
	__u64 v0 = s->v0, v1 = s->v1, v2 = s->v2, v3 = s->v3 ^ b;

	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	v0 ^= b;
	v2 ^= 0xff;
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	SIP_ROUND(v0, v1, v2, v3);
	return v0 ^ v1 ^ v2 ^ v3;
}

/* SipHash-2-4 of words[0..nwords) (nwords <= SIPHASH_MAX_WORDS) under key (k0, k1): the
 * key's 16 bytes read as two little-endian words, exactly as the reference reads them. */
static __always_inline __u64 ls_siphash24(__u64 k0, __u64 k1, const __u64 *words,
					  __u32 nwords)
{
	struct ls_sip s;
	__u32 i;

	ls_sip_init(&s, k0, k1);
#pragma unroll
	for (i = 0; i < SIPHASH_MAX_WORDS; i++) {
		if (i >= nwords)
			break;
		ls_sip_word(&s, words[i]);
	}
	return ls_sip_final(&s, nwords);
}

#endif
