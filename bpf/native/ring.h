/* The BPF ring buffer's consumer protocol (tools/lib/bpf/ringbuf.c's), one walk for every
 * reader: ring.c copies the records out (RingBuffer.read), the agent's native path reads
 * them in place (producers/native/decode.c). The producer position is read with acquire
 * ordering, each record header with acquire ordering (a BUSY record ends the walk: it is
 * still being written), DISCARDed records are skipped, and the consumer position is stored
 * with release ordering once the records are used, so the kernel reuses no byte before it
 * is read. The data area is mapped twice back to back: a record crossing the end is
 * contiguous. */
#ifndef LATSCOPE_RING_H
#define LATSCOPE_RING_H

#include <stdint.h>

#define LS_RB_BUSY (1U << 31)
#define LS_RB_DISCARD (1U << 30)
#define LS_RB_HDR 8

typedef struct {
    const char *data;
    uint64_t mask, pos, end;
} LsRingWalk;

/* From the consumer position to the producer's, or to `limit` if that is nearer. */
static inline void ls_ring_begin(LsRingWalk *w, const uint64_t *cons_pos,
                                 const uint64_t *prod_pos, const char *data, uint64_t mask,
                                 uint64_t limit)
{
    w->data = data;
    w->mask = mask;
    w->pos = __atomic_load_n(cons_pos, __ATOMIC_ACQUIRE);
    w->end = __atomic_load_n(prod_pos, __ATOMIC_ACQUIRE);
    if (limit < w->end)
        w->end = limit;
}

/* The next committed record and its length, or NULL at the end or at a record still being
 * written; w->pos is then where the next walk starts. */
static inline const char *ls_ring_next(LsRingWalk *w, uint32_t *len)
{
    while (w->pos < w->end) {
        const uint32_t *hdr = (const uint32_t *)(w->data + (w->pos & w->mask));
        uint32_t h = __atomic_load_n(hdr, __ATOMIC_ACQUIRE);
        if (h & LS_RB_BUSY)
            return NULL;
        uint32_t n = h & ~(LS_RB_BUSY | LS_RB_DISCARD);
        const char *rec = w->data + ((w->pos + LS_RB_HDR) & w->mask);
        w->pos += (n + LS_RB_HDR + 7) & ~(uint64_t)7;
        if (!(h & LS_RB_DISCARD)) {
            *len = n;
            return rec;
        }
    }
    return NULL;
}

/* Give the records before pos back to the kernel. */
static inline void ls_ring_commit(uint64_t *cons_pos, uint64_t pos)
{
    __atomic_store_n(cons_pos, pos, __ATOMIC_RELEASE);
}

#endif
