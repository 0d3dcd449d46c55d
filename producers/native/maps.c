/* The maps behind the grouping state. Omap is an OrderedDict with the operations
 * grouping.py uses: d[k] = v (a new key goes last, an existing one keeps its place),
 * move_to_end, del, and the oldest entry (popitem(last=False), next(iter(d))). Records come
 * out in the Python path's order only if these orders are the same, so they are kept to
 * the letter. Entries and groups are recycled through bounded free lists (POOL_MAX). */
#include "native.h"

static uint64_t key_hash(uint32_t flow, uint32_t seq, uint32_t copy)
{
    uint64_t h = (uint64_t)flow * 0x9E3779B97F4A7C15ull;
    h ^= ((uint64_t)seq | (uint64_t)copy << 32) * 0xC2B2AE3D27D4EB4Full;
    return h ^ (h >> 31);
}

int om_init(Omap *m)
{
    m->mask = 15;
    m->len = 0;
    m->b = PyMem_Calloc(m->mask + 1, sizeof(Entry *));
    m->head.next = m->head.prev = &m->head;
    if (m->b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

void om_free(Path *p, Omap *m)
{
    if (m->b == NULL)
        return;
    Entry *e = m->head.next;
    while (e != &m->head) {
        Entry *next = e->next;
        if (e->g != NULL)
            group_release(p, e->g);
        e->g = NULL;
        om_release(p, e);
        e = next;
    }
    PyMem_Free(m->b);
    m->b = NULL;
    m->len = 0;
    m->head.next = m->head.prev = &m->head;
}

Entry *om_get(Omap *m, uint32_t flow, uint32_t seq, uint32_t copy)
{
    if (m->len == 0)
        return NULL;
    uint64_t h = key_hash(flow, seq, copy);
    for (Entry *e = m->b[h & m->mask]; e != NULL; e = e->hnext)
        if (e->hash == h && e->flow == flow && e->seq == seq && e->copy == copy)
            return e;
    return NULL;
}

static int om_grow(Omap *m)
{
    size_t mask = m->mask * 2 + 1;
    Entry **b = PyMem_Calloc(mask + 1, sizeof(Entry *));
    if (b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Entry *e = m->head.next; e != &m->head; e = e->next) {
        e->hnext = b[e->hash & mask];
        b[e->hash & mask] = e;
    }
    PyMem_Free(m->b);
    m->b = b;
    m->mask = mask;
    return 0;
}

/* A new key, last in order (the caller knows it is absent). */
Entry *om_add(Path *p, Omap *m, uint32_t flow, uint32_t seq, uint32_t copy)
{
    if (m->len >= m->mask && om_grow(m) < 0)
        return NULL;
    Entry *e = p->free_entries;
    if (e != NULL) {
        p->free_entries = e->next;
        p->nfree_entries--;
    } else if ((e = PyMem_Malloc(sizeof(Entry))) == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    memset(e, 0, sizeof(*e));
    e->flow = flow;
    e->seq = seq;
    e->copy = copy;
    e->hash = key_hash(flow, seq, copy);
    e->hnext = m->b[e->hash & m->mask];
    m->b[e->hash & m->mask] = e;
    e->prev = m->head.prev;
    e->next = &m->head;
    m->head.prev->next = e;
    m->head.prev = e;
    m->len++;
    p->flows[flow]->refs++;
    return e;
}

/* d[k]: the existing entry (in its place) or a new one, last. */
Entry *om_set(Path *p, Omap *m, uint32_t flow, uint32_t seq, uint32_t copy)
{
    Entry *e = om_get(m, flow, seq, copy);
    return e != NULL ? e : om_add(p, m, flow, seq, copy);
}

/* Out of the map; the entry (and its group) is still the caller's. */
void om_unlink(Omap *m, Entry *e)
{
    Entry **pp = &m->b[e->hash & m->mask];
    while (*pp != e)
        pp = &(*pp)->hnext;
    *pp = e->hnext;
    e->prev->next = e->next;
    e->next->prev = e->prev;
    m->len--;
}

/* An unlinked entry back to the pool (its group, if any, is the caller's). */
void om_release(Path *p, Entry *e)
{
    uint32_t flow = e->flow;
    if (p->nfree_entries < POOL_MAX) {
        e->next = p->free_entries;
        p->free_entries = e;
        p->nfree_entries++;
    } else {
        PyMem_Free(e);
    }
    flow_unref(p, flow);
}

void om_move_end(Omap *m, Entry *e)
{
    if (m->head.prev == e)
        return;
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->prev = m->head.prev;
    e->next = &m->head;
    m->head.prev->next = e;
    m->head.prev = e;
}

Group *group_new(Path *p, int64_t now)
{
    Group *g = p->free_groups;
    if (g != NULL) {
        p->free_groups = g->next_free;
        p->nfree_groups--;
    } else if ((g = PyMem_Malloc(sizeof(Group))) == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    g->hits = g->small;
    g->n = 0;
    g->cap = INLINE_HITS;
    g->last_ns = now;
    g->exited = 0;
    g->next_free = NULL;
    return g;
}

void group_release(Path *p, Group *g)
{
    if (g->hits != g->small)
        PyMem_Free(g->hits);
    if (p->nfree_groups < POOL_MAX) {
        g->next_free = p->free_groups;
        p->free_groups = g;
        p->nfree_groups++;
    } else {
        PyMem_Free(g);
    }
}

int group_append(Group *g, const Hit *h)
{
    if (h->wait != NULL) {          /* the causes into the group, the hit names the slot */
        Hit kept = *h;
        kept.wslot = h->wslot;
        memcpy(g->wait[kept.wslot - 1], h->wait, sizeof(g->wait[0]));
        kept.wait = NULL;
        return group_append(g, &kept);
    }
    if (g->n == g->cap) {
        if (g->cap > INT_MAX / 2) {
            PyErr_NoMemory();
            return -1;
        }
        int cap = g->cap * 2;
        Hit *hits;
        if (g->hits == g->small) {
            hits = PyMem_Malloc(sizeof(Hit) * (size_t)cap);
            if (hits != NULL)
                memcpy(hits, g->small, sizeof(Hit) * (size_t)g->n);
        } else {
            hits = PyMem_Realloc(g->hits, sizeof(Hit) * (size_t)cap);
        }
        if (hits == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        g->hits = hits;
        g->cap = cap;
    }
    g->hits[g->n++] = *h;
    return 0;
}

/* -- byte-keyed maps: the raw flow cache, devices, XDP names, exit devices */

static uint64_t bytes_hash(const unsigned char *k, int n)
{
    uint64_t h = 0xcbf29ce484222325ull ^ (uint64_t)n;
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, k + i, 8);
        h = (h ^ w) * 0x9E3779B97F4A7C15ull;
        h ^= h >> 32;
    }
    for (; i < n; i++)
        h = (h ^ k[i]) * 0x100000001b3ull;
    return h ^ (h >> 29);
}

int bm_init(Bmap *m, int klen)
{
    m->klen = klen;
    m->mask = 15;
    m->len = 0;
    m->b = PyMem_Calloc(m->mask + 1, sizeof(BEntry *));
    if (m->b == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

void *bm_get(Bmap *m, const void *key)
{
    uint64_t h = bytes_hash(key, m->klen);
    for (BEntry *e = m->b[h & m->mask]; e != NULL; e = e->next)
        if (e->hash == h && memcmp(e->key, key, m->klen) == 0)
            return e->val;
    return NULL;
}

/* A new key (the caller knows it is absent); val must not be NULL. */
int bm_put(Bmap *m, const void *key, void *val)
{
    if (m->len >= m->mask) {
        size_t mask = m->mask * 2 + 1;
        BEntry **b = PyMem_Calloc(mask + 1, sizeof(BEntry *));
        if (b == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        for (size_t i = 0; i <= m->mask; i++) {
            BEntry *e = m->b[i];
            while (e != NULL) {
                BEntry *next = e->next;
                e->next = b[e->hash & mask];
                b[e->hash & mask] = e;
                e = next;
            }
        }
        PyMem_Free(m->b);
        m->b = b;
        m->mask = mask;
    }
    BEntry *e = PyMem_Malloc(sizeof(BEntry));
    if (e == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    memset(e->key, 0, sizeof(e->key));
    memcpy(e->key, key, m->klen);
    e->hash = bytes_hash(key, m->klen);
    e->val = val;
    e->next = m->b[e->hash & m->mask];
    m->b[e->hash & m->mask] = e;
    m->len++;
    return 0;
}

void bm_clear(Bmap *m, void (*drop)(Path *, void *), Path *p)
{
    if (m->b == NULL)
        return;
    for (size_t i = 0; i <= m->mask; i++) {
        BEntry *e = m->b[i];
        while (e != NULL) {
            BEntry *next = e->next;
            if (drop != NULL)
                drop(p, e->val);
            PyMem_Free(e);
            e = next;
        }
        m->b[i] = NULL;
    }
    m->len = 0;
}

void bm_free(Bmap *m, void (*drop)(Path *, void *), Path *p)
{
    bm_clear(m, drop, p);
    PyMem_Free(m->b);
    m->b = NULL;
}
